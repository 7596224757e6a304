import { describe, expect, it } from 'vitest';
import { sha256 } from '../../../src/crypto/index.js';
import { Repository, checkRepository, collectGarbage, repairRepository, type Catalog, type CatalogEntry } from '../../../src/repo/index.js';
import { REGISTRY_VIEW_KEY, digestFileKey, planView, registryPath, tagFileKey, writeRegistryView } from '../../../src/repo/registry.js';
import { Store } from '../../../src/repo/store.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { syncRepos } from '../../../src/sync/sync.js';
import { FileTransport, MemoryTransport } from '../../../src/transport/index.js';
import { tempDir } from '../../helpers.js';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FaultyTransport } from './faulty.js';
import { demoArchives, publish } from './fixtures.js';

const TTL = 90 * 24 * 3600 * 1000;

/** A memory repository that notes every key renamed into place (what a write made visible). */
class Noting extends MemoryTransport {
  readonly placed: string[] = [];
  override async rename(from: string, to: string): Promise<void> {
    await super.rename(from, to);
    this.placed.push(to);
  }
}

async function current(t: MemoryTransport, tag: string): Promise<CatalogEntry> {
  return (await new Repository(t).readCatalog())!.catalog.releases.find((e) => e.tag === tag)!;
}

const entry = (name: string, tag: string, mediaType?: string): CatalogEntry => ({
  name, tag, version: 1, kind: 'image', created: '2026-12-01T00:00:00.000Z', record: '00000001-0000000000000000.json',
  digest: `sha256:${'1'.repeat(64)}`, size: 10,
  ...(mediaType ? { manifest: { mediaType, digest: `sha256:${'2'.repeat(64)}`, size: 100 } } : {}),
});
const catalogOf = (releases: CatalogEntry[]): Catalog => ({ schema: 'tarport.catalog/v2', repository: '0'.repeat(32), sequence: 1, created: '', expires: '', releases });
const OCI = 'application/vnd.oci.image.manifest.v1+json';

describe('registry view', () => {
  it('registry paths follow Docker reference rules: Docker Hub names get library/, a registry host is dropped', () => {
    expect(registryPath('x')).toBe('library/x');
    expect(registryPath('a/b')).toBe('a/b');
    expect(registryPath('registry.example:5000/team/app')).toBe('team/app');
    expect(registryPath('localhost/app')).toBe('app');
  });

  it('a publish writes the tag file and the digest copy of the top manifest, byte for byte', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const e = await current(t, '1');
    const manifest = t.files.get(`blobs/sha256/${e.manifest!.digest.slice(7)}`)!;
    expect(sha256(manifest)).toBe(e.manifest!.digest);
    expect(t.files.get(tagFileKey('demo/app', '1', 'oci-manifest'))).toEqual(manifest);
    expect(t.files.get(digestFileKey(e.manifest!.digest, 'oci-manifest'))).toEqual(manifest);
    const view = JSON.parse(t.files.get(REGISTRY_VIEW_KEY)!.toString()) as { tags: Record<string, unknown> };
    expect(view.tags).toEqual({ 'demo/app:1': { digest: e.manifest!.digest, kind: 'oci-manifest' } });
  });

  it.each([
    ['an empty path segment', 'demo//app:1', 'oci-manifest'],
    ['a path that climbs', '../../etc:1', 'oci-manifest'],
    ['a kind that is none', 'demo/app:old', '../../x'],
  ])('a view whose key holds %s (damaged or forged) is rebuilt by the next publish, which succeeds', async (_what, key, kind) => {
    // a directory: its transport refuses keys that are no clean path, as every real one does
    const root = await tempDir();
    const t = new FileTransport(root);
    await publish(t, 0, '1');
    const file = join(root, REGISTRY_VIEW_KEY);
    const view = JSON.parse(await readFile(file, 'utf8')) as { tags: Record<string, { digest: string; kind: string }> };
    view.tags[key] = { digest: `sha256:${'3'.repeat(64)}`, kind };
    await writeFile(file, JSON.stringify(view));
    await publish(t, 1, '1');
    const after = JSON.parse(await readFile(file, 'utf8')) as { tags: Record<string, unknown> };
    expect(Object.keys(after.tags)).toEqual(['demo/app:1']);
  });

  it('an update rewrites only the tag that moved; the old version stays pullable by digest', async () => {
    const t = new Noting();
    await publish(t, 0, '1');
    await publish(t, 0, 'stable');
    const v1 = (await current(t, '1')).manifest!.digest;
    t.placed.length = 0;
    await publish(t, 1, '1');
    const v2 = (await current(t, '1')).manifest!.digest;
    expect(v2).not.toBe(v1);
    const registryWrites = t.placed.filter((k) => k.startsWith('tarport/registry/'));
    expect(registryWrites.sort()).toEqual([REGISTRY_VIEW_KEY, digestFileKey(v2, 'oci-manifest'), tagFileKey('demo/app', '1', 'oci-manifest')].sort());
    expect(sha256(t.files.get(tagFileKey('demo/app', '1', 'oci-manifest'))!)).toBe(v2);
    expect(sha256(t.files.get(tagFileKey('demo/app', 'stable', 'oci-manifest'))!)).toBe(v1);
    expect(t.files.has(digestFileKey(v1, 'oci-manifest'))).toBe(true);
  });

  it('leaves out, with the reason, releases without a manifest, unknown media types, clashing paths and names no stick can hold', () => {
    const { tags, skipped } = planView(catalogOf([
      entry('a.example/team/app', '1', OCI),
      entry('b.example/team/app', '1', OCI),
      entry('team/app', 'V1', OCI),
      entry('team/app', 'v1', OCI),
      entry('secret', '1'),
      entry('odd', '1', 'application/x-unknown'),
      entry('team/app', 'CON', OCI),
      entry('team/nul', '1', OCI),
    ]));
    expect([...tags.keys()]).toEqual(['team/app:1', 'team/app:V1']);
    expect(skipped).toEqual([
      { ref: 'b.example/team/app:1', reason: 'clash', why: 'a.example/team/app:1 is served as team/app:1 already' },
      { ref: 'team/app:v1', reason: 'clash', why: 'team/app:V1 is served as team/app:v1 already' },
      { ref: 'secret:1', reason: 'no-manifest', why: 'encrypted releases are not served as a registry' },
      { ref: 'odd:1', reason: 'media-type', why: 'media type application/x-unknown is not one a registry serves' },
      { ref: 'team/app:CON', reason: 'unportable', why: '"CON.oci-manifest" is not a file name FAT32, exFAT and NTFS accept (a reserved device name or a trailing dot), so it cannot be served as team/app:CON' },
      { ref: 'team/nul:1', reason: 'unportable', why: '"nul" is not a file name FAT32, exFAT and NTFS accept (a reserved device name or a trailing dot), so it cannot be served as team/nul:1' },
    ]);
  });

  it('gc removes the digest copies of the manifests it removes, and keeps the current ones', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const v1 = (await current(t, '1')).manifest!.digest;
    await publish(t, 1, '1');
    const v2 = (await current(t, '1')).manifest!.digest;
    const r = await collectGarbage(new Repository(new FaultyTransport(t, 2, true, false)), { keep: 1, dryRun: false, graceMs: 0 });
    expect(r.objectsRemoved).toContain(v1);
    expect(r.housekeeping).toContain(digestFileKey(v1, 'oci-manifest'));
    expect(t.files.has(digestFileKey(v1, 'oci-manifest'))).toBe(false);
    expect(t.files.has(digestFileKey(v2, 'oci-manifest'))).toBe(true);
  });

  it('check warns of a tag file that does not hold the current manifest; repair writes it again', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    expect((await checkRepository(new Repository(t))).warnings).toEqual([]);
    const file = tagFileKey('demo/app', '1', 'oci-manifest');
    t.files.set(file, Buffer.from('{}'));
    const c = await checkRepository(new Repository(t));
    expect(c.faults).toEqual([]);
    expect(c.warnings.map((w) => w.what)).toEqual([file]);
    const r = await repairRepository(new Repository(t), { ttlMs: TTL });
    expect(r.repaired).toEqual(['registry view written again (1 file did not match the catalog)']);
    expect(sha256(t.files.get(file)!)).toBe((await current(t, '1')).manifest!.digest);
    expect((await checkRepository(new Repository(t))).warnings).toEqual([]);
  });

  it('sync writes the view at its destination from the catalog it carries', async () => {
    const src = new MemoryTransport('src');
    await publish(src, 0, '1');
    await publish(src, 1, '2');
    const dst = new MemoryTransport('dst');
    await syncRepos(new Repository(src), new Repository(dst), { create: true, catalogTtlMs: DEFAULT_CATALOG_TTL_MS });
    const registryFiles = (t: MemoryTransport) => [...t.files.entries()].filter(([k]) => k.startsWith('tarport/registry/')).sort(([a], [b]) => a.localeCompare(b));
    expect(registryFiles(dst).map(([k]) => k)).toEqual(registryFiles(src).map(([k]) => k));
    for (const [k, v] of registryFiles(src)) expect(dst.files.get(k), k).toEqual(v);
    expect((await checkRepository(new Repository(dst))).warnings).toEqual([]);
  });

  it('check names a served release whose objects are stored in parts (which a web server cannot join)', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const e = await current(t, '1');
    const layer = (JSON.parse(t.files.get(tagFileKey('demo/app', '1', 'oci-manifest'))!.toString()) as { layers: { digest: string }[] }).layers[0]!.digest;
    // split it as sync --max-file-size stores it: one part and its list
    const bytes = t.files.get(`blobs/sha256/${layer.slice(7)}`)!;
    t.files.delete(`blobs/sha256/${layer.slice(7)}`);
    t.files.set(`blobs/sha256/${layer.slice(7)}.p0001`, bytes);
    t.files.set(`blobs/sha256/${layer.slice(7)}.parts`, Buffer.from(JSON.stringify({ digest: layer, size: bytes.length, parts: [{ digest: layer, size: bytes.length }] })));
    const c = await checkRepository(new Repository(t));
    expect(c.faults).toEqual([]);
    expect(c.warnings).toEqual([{ what: `${e.name}:${e.tag}`, problem: expect.stringContaining(`object ${layer} is stored in parts`) as string }]);
  });

  it('a publish whose release clashes with a served path says so; one that is served has no note', async () => {
    const t = new MemoryTransport();
    const [v1] = await demoArchives();
    const as = (name: string) => publishArchive(new Repository(t), v1!, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name, tag: '1' } });
    expect((await as('a.example/team/app')).releases[0]!.notServedAsRegistry).toBeUndefined();
    expect((await as('b.example/team/app')).releases[0]!.notServedAsRegistry).toBe('a.example/team/app:1 is served as team/app:1 already');
  });

  it('a release whose top manifest is an index: the tag serves the index, each platform manifest is served by digest', async () => {
    const t = new MemoryTransport();
    const child = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: {}, layers: [] }));
    const childDigest = sha256(child);
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: OCI, digest: childDigest, size: child.length, platform: { os: 'linux', architecture: 'arm64' } }] }));
    t.files.set(`blobs/sha256/${childDigest.slice(7)}`, child);
    t.files.set(`blobs/sha256/${sha256(index).slice(7)}`, index);
    const e: CatalogEntry = { ...entry('multi', '1'), manifest: { mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha256(index), size: index.length } };
    await writeRegistryView(new Store(t), catalogOf([e]));
    expect(t.files.get(tagFileKey('library/multi', '1', 'oci-index'))).toEqual(index);
    expect(t.files.get(digestFileKey(sha256(index), 'oci-index'))).toEqual(index);
    expect(t.files.get(digestFileKey(childDigest, 'oci-manifest'))).toEqual(child);
  });
});
