import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import {
  MEDIA_TYPES,
  ReleaseRecordSchema,
  Repository,
  normalizePlatform,
  parsePlatform,
  parseWith,
  pickPlatform,
  platformScore,
  platformView,
  recordMembers,
  recordObjects,
  recordPlatforms,
  recordTopManifest,
  samePlatform,
  type ReleaseRecord,
} from '../../../src/repo/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { multiPlatform, tarBytes } from '../../corpus/tarwriter.js';
import { tempDir } from '../../helpers.js';
import { publish } from './fixtures.js';

async function publishMulti(t: MemoryTransport, opts: { absent?: boolean } = {}): Promise<{ record: ReleaseRecord; mp: ReturnType<typeof multiPlatform> }> {
  const mp = multiPlatform({ shape: 'nested', ...opts });
  const p = join(await tempDir(), 'multi.tar');
  await writeFile(p, tarBytes(mp.items));
  const repo = new Repository(t);
  await publishArchive(repo, p, { create: true, compression: 'gzip', catalogTtlMs: DEFAULT_CATALOG_TTL_MS });
  const [ref] = await repo.listReleases('corpus/multi', '1');
  return { record: (await repo.readRecord(ref!)).record, mp };
}

const formatVersion = (t: MemoryTransport) => (JSON.parse(t.files.get('tarport/format.json')!.toString()) as { version: number }).version;

describe('multi-platform releases', () => {
  it('an index publishes one release carrying both platforms and the attestation; its top manifest is the index', async () => {
    const t = new MemoryTransport();
    const { record, mp } = await publishMulti(t, { absent: true });
    expect(record.schema).toBe('tarport.release/v2');
    expect(recordPlatforms(record)).toEqual(['linux/amd64', 'linux/arm64/v8']);
    expect(recordMembers(record).map((m) => `${m.platform} ${m.state}${m.type ? ' ' + m.type : ''}`)).toEqual(['linux/amd64 image', 'linux/arm64/v8 image', 'unknown/unknown artifact attestation-manifest', 'linux/s390x absent']);
    expect(record.index!.platforms.map((p) => p.contentKey)).toEqual([mp.amd64.config, mp.arm64.config]);
    // the attestation is kept byte for byte, and points at the amd64 manifest tarport wrote
    expect(record.index!.artifacts[0]!.manifest.digest).toBe(mp.attestation);
    expect(record.index!.artifacts[0]!.annotations!['vnd.docker.reference.digest']).toBe(record.index!.platforms[0]!.manifest!.digest);
    const top = recordTopManifest(record)!;
    expect(top.mediaType).toBe(MEDIA_TYPES.index);
    expect(top.key).toBe(`blobs/sha256/${top.digest.slice(7)}`);
    const index = JSON.parse(t.files.get(top.key)!.toString()) as { manifests: { digest: string }[] };
    expect(index.manifests.map((m) => m.digest)).toEqual([record.index!.platforms[0]!.manifest!.digest, record.index!.platforms[1]!.manifest!.digest, mp.attestation]);
    // every object the record names is in the repository (what gc keeps and sync carries)
    for (const d of recordObjects(record)) expect(t.files.has(`blobs/sha256/${d.digest.slice(7)}`), d.digest).toBe(true);
    const view = JSON.parse(t.files.get('index.json')!.toString()) as { manifests: { mediaType: string; digest: string }[] };
    expect(view.manifests).toEqual([expect.objectContaining({ mediaType: MEDIA_TYPES.index, digest: top.digest })]);
  });

  it('publishing the same index again makes no new version', async () => {
    const t = new MemoryTransport();
    await publishMulti(t);
    await publishMulti(t);
    expect((await new Repository(t).listReleases('corpus/multi', '1')).map((r) => r.version)).toEqual([1]);
  });

  it('the format stays 2 for single-platform releases (main reads them) and becomes 3 with the first index record', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    expect(formatVersion(t)).toBe(2);
    await publishMulti(t);
    expect(formatVersion(t)).toBe(3);
    await publish(t, 1, '2');
    expect(formatVersion(t)).toBe(3);
  });

  it('a record written by the previous tarport (schema v1, no index) reads as before; a v1 record with an index is refused', () => {
    const main = Buffer.from(JSON.stringify({
      schema: 'tarport.release/v1', name: 'team/app', tag: '1', version: 1, created: '2026-11-24T10:00:00.000Z', kind: 'image',
      contentKey: `sha256:${'a'.repeat(64)}`,
      config: { mediaType: MEDIA_TYPES.config, digest: `sha256:${'a'.repeat(64)}`, size: 10 },
      manifest: { mediaType: MEDIA_TYPES.manifest, digest: `sha256:${'b'.repeat(64)}`, size: 10 },
      layers: [{ mediaType: MEDIA_TYPES.layer.zstd, digest: `sha256:${'c'.repeat(64)}`, size: 5, diffId: `sha256:${'d'.repeat(64)}`, uncompressedSize: 9, compression: 'zstd' }],
      sourceTags: ['team/app:1'], producer: { tool: 'tarport', version: '0.2.0' },
    }));
    const r = parseWith(ReleaseRecordSchema, main, 'release record x');
    expect(recordPlatforms(r)).toEqual([]);
    expect(platformView(r, parsePlatform('linux/arm64'))).toBe(r);
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(main.toString()), index: { platforms: [], artifacts: [], absent: [] } }));
    expect(() => parseWith(ReleaseRecordSchema, forged, 'release record x')).toThrow(/index/);
  });

  it('the consumer view of a platform holds only that platform; a platform the release lacks is refused, naming those it has', async () => {
    const { record, mp } = await publishMulti(new MemoryTransport(), { absent: true });
    const amd = platformView(record, parsePlatform('linux/amd64'));
    expect(amd.contentKey).toBe(mp.amd64.config);
    expect(amd.config!.digest).toBe(mp.amd64.config);
    expect(amd.index).toBeUndefined();
    expect(platformView(record, parsePlatform('linux/arm64')).contentKey).toBe(mp.arm64.config);
    let err: unknown;
    try {
      platformView(record, parsePlatform('linux/ppc64le'));
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'PLATFORM' });
    expect((err as Error).message).toBe('corpus/multi:1 v1 has no image for linux/ppc64le: it has linux/amd64, linux/arm64/v8 (listed without their blobs: linux/s390x); choose one with --platform, or publish an archive that holds linux/ppc64le');
  });
});

describe('platform matching', () => {
  const p = (s: string) => parsePlatform(s);
  it('needs the same os and architecture; arm64 without a variant is v8', () => {
    expect(platformScore(p('linux/arm64'), p('linux/amd64'))).toBeUndefined();
    expect(platformScore(p('linux/amd64'), p('linux/arm64'))).toBeUndefined();
    expect(platformScore(p('windows/amd64'), p('linux/amd64'))).toBeUndefined();
    expect(platformScore(p('linux/arm64/v8'), p('linux/arm64'))).toBe(1000);
    expect(platformScore(p('linux/arm64'), p('linux/arm64/v8'))).toBe(1000);
  });
  it('an arm v7 host runs v6 images (lower score than v7), never v8', () => {
    expect(platformScore(p('linux/arm/v6'), p('linux/arm/v7'))).toBe(6);
    expect(platformScore(p('linux/arm/v7'), p('linux/arm/v7'))).toBe(1000);
    expect(platformScore(p('linux/arm/v8'), p('linux/arm/v7'))).toBeUndefined();
    expect(platformScore(p('linux/arm/v7'), p('linux/arm/v6'))).toBeUndefined();
  });
  it('the spellings containerd takes as one platform are one (platforms.Normalize)', () => {
    const n = (s: string) => normalizePlatform(p(s));
    expect(n('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(n('linux/aarch64')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(n('linux/arm64/v8.0')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(n('linux/arm64/9.0')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v9' });
    expect(n('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(n('linux/x86-64/v1')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(n('linux/amd64/v3')).toEqual({ os: 'linux', architecture: 'amd64', variant: 'v3' });
    expect(n('linux/arm')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(n('linux/arm/7')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(n('linux/armhf')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(n('linux/armel')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v6' });
    expect(n('linux/i386')).toEqual({ os: 'linux', architecture: '386' });
    expect(n('macos/arm64')).toEqual({ os: 'darwin', architecture: 'arm64' });
  });
  it('samePlatform: equal after normalizing, and only then', () => {
    expect(samePlatform(p('linux/arm64/v8'), p('linux/arm64'))).toBe(true);
    expect(samePlatform(p('linux/arm'), p('linux/arm/v7'))).toBe(true);
    expect(samePlatform(p('linux/armhf'), p('linux/arm/v7'))).toBe(true);
    expect(samePlatform(p('linux/x86_64'), p('linux/amd64/v1'))).toBe(true);
    expect(samePlatform(p('linux/i386'), p('linux/386'))).toBe(true);
    expect(samePlatform(p('linux/arm/v6'), p('linux/arm/v7'))).toBe(false);
    expect(samePlatform(p('linux/armel'), p('linux/arm'))).toBe(false);
    expect(samePlatform(p('linux/amd64/v2'), p('linux/amd64'))).toBe(false);
    expect(samePlatform(p('linux/arm64/v9'), p('linux/arm64'))).toBe(false);
  });
  it('matching takes every spelling of the platform: armel is arm v6, x86-64 and i386 are amd64 and 386', () => {
    expect(platformScore(p('linux/armel'), p('linux/arm/v6'))).toBe(1000);
    expect(platformScore(p('linux/armel'), p('linux/arm/v7'))).toBe(6);
    expect(platformScore(p('linux/arm/7'), p('linux/armhf'))).toBe(1000);
    expect(platformScore(p('linux/amd64'), p('linux/x86-64'))).toBe(1000);
    expect(platformScore(p('linux/amd64/v2'), p('linux/x86_64/v3'))).toBe(2);
    expect(platformScore(p('linux/386'), p('linux/i386'))).toBe(1000);
    expect(platformScore(p('linux/arm64'), p('linux/arm64/v8.0'))).toBe(1000);
  });
  it('--platform linux/arm64/v8 picks a linux/arm64 image and linux/arm64 a linux/arm64/v8 one, whatever their spelling', () => {
    const image = (platform: string, n: number) => ({ platform: p(platform), contentKey: `sha256:${String(n).repeat(64)}`, config: { mediaType: MEDIA_TYPES.config, digest: `sha256:${String(n).repeat(64)}`, size: 1 }, layers: [] });
    const record = (platforms: string[]) => ({ name: 'team/app', tag: '1', version: 1, index: { platforms: platforms.map((s, i) => image(s, i + 1)), artifacts: [], absent: [] } }) as unknown as ReleaseRecord;
    expect(pickPlatform(record(['linux/amd64', 'linux/arm64']), p('linux/arm64/v8'))?.platform).toEqual(p('linux/arm64'));
    expect(pickPlatform(record(['linux/amd64', 'linux/arm64/v8']), p('linux/arm64'))?.platform).toEqual(p('linux/arm64/v8'));
    expect(pickPlatform(record(['linux/x86_64', 'linux/aarch64']), p('linux/amd64'))?.platform).toEqual(p('linux/x86_64'));
    expect(pickPlatform(record(['linux/arm/v7', 'linux/armel']), p('linux/arm/v6'))?.platform).toEqual(p('linux/armel'));
    expect(pickPlatform(record(['linux/arm/v7', 'linux/armel']), p('linux/arm'))?.platform).toEqual(p('linux/arm/v7'));
  });
  it('--platform values are checked', () => {
    expect(p('Linux/ARM64/v8')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(() => p('amd64')).toThrow('--platform "amd64": write os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8');
    expect(() => p('linux/amd64/v1/x')).toThrow(/os\/architecture\[\/variant\]/);
  });
});
