// src/producer/publish.ts: what a publish reuses, and an archive published while it still comes.
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LayerWatch, TarArchive } from '../../../src/archive/index.js';
import { signerFrom } from '../../../src/cli/context.js';
import { generateKeyPair, loadRecipients, loadTrustedKeys, sha256, signatureIssuer, verifyDetached } from '../../../src/crypto/index.js';
import { TarportError } from '../../../src/errors.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive, type GrowingArchive } from '../../../src/producer/index.js';
import { Repository, signatureKey, type Sign } from '../../../src/repo/index.js';
import { RELEASES_FOLDER, recordKey } from '../../../src/repo/layout.js';
import { MAX_SIGNATURE_BYTES } from '../../../src/repo/read.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { dockerSave, ociLayout, sha, tarBytes } from '../../corpus/tarwriter.js';
import { tempDir } from '../../helpers.js';

const MiB = 1 << 20;
import { demoArchives, faults, publish } from '../repo/fixtures.js';
import { FaultyTransport } from '../repo/faulty.js';

describe('publishArchive: what it looks up to reuse', () => {
  it("looks only at stored layers the archive holds, not at every layer of every tag's current release", async () => {
    const t = new MemoryTransport();
    await publish(t, 1, 'a'); // v2: v1's layers and one of its own
    const looked: string[] = [];
    const stat = t.stat.bind(t);
    t.stat = (key: string) => {
      looked.push(key);
      return stat(key);
    };
    await publish(t, 0, 'b');
    const repo = new Repository(t);
    const layersOf = async (tag: string) => (await repo.readRecord((await repo.listReleases('demo/app', tag)).at(-1)!)).record.layers;
    const [a, b] = [await layersOf('a'), await layersOf('b')];
    const shared = a.filter((l) => b.some((m) => m.diffId === l.diffId));
    const onlyA = a.filter((l) => !shared.includes(l));
    expect(shared.length).toBeGreaterThan(0);
    expect(onlyA).toHaveLength(1);
    // the shared layers were looked up and reused; a's own layer was never asked for
    for (const l of shared) expect(looked).toContain(`blobs/sha256/${l.digest.slice(7)}`);
    expect(looked.filter((k) => k.endsWith(onlyA[0]!.digest.slice(7)))).toEqual([]);
    expect(b.find((l) => l.diffId === shared[0]!.diffId)!.digest).toBe(shared[0]!.digest);
  });
});

/**
 * A growing archive as `push -` makes one: `original`'s bytes appended to a file of its own when
 * told, each shown to a LayerWatch once written.
 */
async function growing(original: string) {
  const bytes = await readFile(original);
  const path = join(await tempDir(), 'growing.tar');
  await writeFile(path, '');
  const watch = new LayerWatch();
  let fed = 0;
  let fault: Error | undefined;
  let settle!: { resolve: () => void; reject: (e: Error) => void };
  const complete = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  complete.then(() => watch.end(), () => watch.end());
  const source: GrowingArchive = { path, complete, layers: watch.layers(), fault: () => fault };
  return {
    source,
    bytes,
    /** Appends the original's bytes up to `end`. */
    async feed(end: number) {
      const chunk = bytes.subarray(fed, end);
      await appendFile(path, chunk);
      watch.write(chunk);
      fed = end;
    },
    async finish() {
      await this.feed(bytes.length);
      settle.resolve();
    },
    fail: (e: Error) => settle.reject(e),
    /** As the copy fails (stdin.ts): its fault set, the file removed, then `complete` rejects. */
    async failAndRemove(e: Error) {
      fault = e;
      await rm(path);
      settle.reject(e);
    },
  };
}

/** Records every key the transport writes, in order. */
function writesOf(t: MemoryTransport): string[] {
  const keys: string[] = [];
  const write = t.write.bind(t);
  t.write = (key, source, opts) => {
    keys.push(key);
    return write(key, source, opts);
  };
  return keys;
}

/** The temporary names of staged objects among written keys (repo/objects.ts, stageBlob). */
const stagedKeys = (keys: readonly string[]) => keys.filter((k) => /^blobs\/sha256\/\.tarport-[0-9a-f]{16}\.tmp$/.test(k));

const opts = { compression: 'zstd' as const, catalogTtlMs: DEFAULT_CATALOG_TTL_MS };
/** When `until` holds, polled; fails the test after 5 s. */
async function eventually(until: () => boolean, what: string): Promise<void> {
  for (const t0 = Date.now(); !until(); await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() - t0 > 5_000) throw new Error(`not within 5 s: ${what}`);
  }
}

describe('publishArchive: a growing archive (push -)', () => {
  it('stores a new layer while the rest of the archive still comes, and publishes what a file push publishes', async () => {
    const [v1] = await demoArchives();
    const tar = await TarArchive.open(v1!);
    const first = tar.order.map((n) => tar.entries.get(n)!).find((e) => e.name.endsWith('/layer.tar'))!;
    const t = new MemoryTransport();
    const keys = writesOf(t);
    const g = await growing(v1!);
    const publishing = publishArchive(new Repository(t), g.source, { ...opts, create: true });
    await g.feed(first.offset + first.size);
    // a staged object, while the manifest has not come
    await eventually(() => stagedKeys(keys).length === 1, 'the first layer staged');
    await g.finish();
    const r = await publishing;
    expect(r.releases.map((x) => `${x.status} ${x.name}:${x.tag} v${x.version}`)).toEqual(['published demo/app:latest v1']);
    // the same release as a push of the file: the same content key and the same layers by diff_id
    const byFile = new MemoryTransport('byfile');
    await publishArchive(new Repository(byFile), v1!, { ...opts, create: true });
    const layersOf = async (tr: MemoryTransport) => (await new Repository(tr).readRecord((await new Repository(tr).listReleases('demo/app', 'latest')).at(-1)!)).record;
    const [a, b] = [await layersOf(t), await layersOf(byFile)];
    expect(a.contentKey).toBe(b.contentKey);
    expect(a.layers.map((l) => [l.diffId, l.uncompressedSize])).toEqual(b.layers.map((l) => [l.diffId, l.uncompressedSize]));
    expect(await faults(t)).toEqual([]);
  });

  it('stores only the layer the repository lacks: an update sends its new layer alone', async () => {
    const [v1, v2] = await demoArchives();
    const t = new MemoryTransport();
    await publishArchive(new Repository(t), v1!, { ...opts, create: true });
    const keys = writesOf(t);
    const g = await growing(v2!);
    const publishing = publishArchive(new Repository(t), g.source, opts);
    await g.finish();
    const r = await publishing;
    expect(r.uploadedObjects).toBe(1);
    expect(stagedKeys(keys)).toHaveLength(3); // its new layer, then its config and its manifest; not the base layer
    expect(await faults(t)).toEqual([]);
  });

  it('refuses a layer that is not the diff_id its config names, after it was stored early, and leaves no object', async () => {
    const s = dockerSave();
    const layer = s.items.find((i) => i.name === s.layerPaths[0])!;
    const items = s.items.map((i) => (i === layer ? { ...i, data: tarBytes([{ name: 'forged.txt', data: Buffer.from('not what the config says\n') }]) } : i));
    const path = join(await tempDir(), 'forged.tar');
    await writeFile(path, tarBytes(items));
    const t = new MemoryTransport();
    await publishArchive(new Repository(t), (await demoArchives())[0]!, { ...opts, create: true });
    const before = [...t.files.keys()].sort();
    const keys = writesOf(t);
    const g = await growing(path);
    const publishing = publishArchive(new Repository(t), g.source, opts).catch((e: unknown) => e);
    await g.finish();
    const e = await publishing;
    expect(e).toMatchObject({ code: 'BAD_INPUT', message: expect.stringContaining(`layer ${s.layerPaths[0]} does not match its diff_id: the config says`) });
    expect(stagedKeys(keys)).toHaveLength(2); // both layers were stored early, before the config came
    expect([...t.files.keys()].sort()).toEqual(before);
  });

  it('drops a layer-shaped entry no image names, and an archive that breaks off leaves nothing', async () => {
    const s = dockerSave();
    const stray = tarBytes([{ name: 'stray.txt', data: Buffer.alloc(5000, 1) }]);
    const items = [{ name: 'stray', type: '5' }, { name: 'stray/layer.tar', data: stray }, ...s.items];
    const path = join(await tempDir(), 'stray.tar');
    await writeFile(path, tarBytes(items));
    const t = new MemoryTransport();
    const keys = writesOf(t);
    const g = await growing(path);
    const r = await Promise.all([publishArchive(new Repository(t), g.source, { ...opts, create: true }), g.finish()]).then(([x]) => x);
    expect(r.uploadedObjects).toBe(2); // the image's two layers; the stray was staged, then dropped
    expect(stagedKeys(keys)).toHaveLength(5); // the stray and the two layers, then the config and the manifest
    const strayDigest = (await new Repository(t).readRecord((await new Repository(t).listReleases('corpus/app', '1')).at(-1)!)).record.layers.map((l) => l.diffId);
    expect(strayDigest).not.toContain(`sha256:${sha(stray)}`);
    expect(await faults(t)).toEqual([]);

    // the same archive cut off after its first layer: the copy fails, so does the publish, and
    // nothing it staged stays
    const t2 = new MemoryTransport();
    await publishArchive(new Repository(t2), (await demoArchives())[0]!, { ...opts, create: true });
    const before = [...t2.files.keys()].sort();
    const keys2 = writesOf(t2);
    const cut = await growing(path);
    const publishing = publishArchive(new Repository(t2), cut.source, opts).catch((e: unknown) => e);
    await cut.feed(3 * 512 + stray.length + 2048);
    await eventually(() => stagedKeys(keys2).length === 1, 'the stray layer staged');
    const broke = new TarportError('BAD_INPUT', 'standard input: the writer died');
    cut.fail(broke);
    expect(await publishing).toBe(broke);
    expect([...t2.files.keys()].sort()).toEqual(before);
  });

  it('reports the copy\'s fault, not the read of a file it removed, when it fails with layers still to store', async () => {
    const path = join(await tempDir(), 'app.tar');
    await writeFile(path, tarBytes(dockerSave().items)); // layers the repository does not hold
    const t = new MemoryTransport();
    await publishArchive(new Repository(t), (await demoArchives())[1]!, { ...opts, create: true });
    const before = [...t.files.keys()].sort();
    const g = await growing(path);
    const tar = await TarArchive.open(path);
    const layers = tar.order.map((n) => tar.entries.get(n)!).filter((e) => e.name.endsWith('/layer.tar'));
    await g.feed(layers[1]!.offset + layers[1]!.size); // two layers seen whole before the publish looks
    const full = new TarportError('IO', 'copy standard input to a file: no space left on device (ENOSPC)');
    await g.failAndRemove(full);
    const e = await publishArchive(new Repository(t), g.source, opts).catch((x: unknown) => x);
    expect(e).toBe(full);
    expect([...t.files.keys()].sort()).toEqual(before);
  });

  it('stores one object for a root file system whose entries are named like layers, twice', async () => {
    const a = tarBytes([{ name: 'a.txt', data: Buffer.alloc(3000, 1) }]);
    const b = tarBytes([{ name: 'b.txt', data: Buffer.alloc(3000, 2) }]);
    const path = join(await tempDir(), 'rootfs.tar');
    await writeFile(path, tarBytes([{ name: 'd', type: '5' }, { name: 'd/layer.tar', data: a }, { name: 'd/layer.tar', data: b }, { name: 'etc/hostname', data: Buffer.from('box\n') }]));
    const t = new MemoryTransport();
    const g = await growing(path);
    const [r] = await Promise.all([publishArchive(new Repository(t), g.source, { ...opts, create: true, name: { name: 'box/rootfs', tag: '1' } }), g.finish()]);
    expect(r.uploadedObjects).toBe(1);
    const { record } = await new Repository(t).readRecord((await new Repository(t).listReleases('box/rootfs', '1')).at(-1)!);
    const stored = [...t.files.keys()].filter((k) => /^blobs\/sha256\/[0-9a-f]{64}$/.test(k));
    expect(stored).toEqual([`blobs/sha256/${record.layers[0]!.digest.slice(7)}`]); // no object of either inner "layer"
  });
});

describe("publishArchive: a root file system Docker's import refuses", () => {
  it('one that names a path twice (tar -r of a changed file; a folder given twice) is published with a warning naming the path and why; one that does not, without', async () => {
    const dir = await tempDir();
    const [twice, once] = [join(dir, 'twice.tar'), join(dir, 'once.tar')];
    await writeFile(twice, tarBytes([{ name: 'etc/motd', data: Buffer.from('1\n') }, { name: 'bin/app', data: Buffer.from('x') }, { name: 'etc/motd', data: Buffer.from('2\n') }]));
    await writeFile(once, tarBytes([{ name: 'etc', type: '5' }, { name: 'etc/motd', data: Buffer.from('1\n') }, { name: 'bin', type: '5' }]));
    const dirTwice = join(dir, 'dir-twice.tar'); // tar --no-recursion -cf dir-twice.tar etc etc
    await writeFile(dirTwice, tarBytes([{ name: 'etc', type: '5' }, { name: './etc', type: '5' }]));
    const push = (path: string, tag: string) => publishArchive(new Repository(new MemoryTransport()), path, { compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, create: true, name: { name: 'box/root', tag } });
    const [r2, r1, rd] = [await push(twice, '1'), await push(once, '2'), await push(dirTwice, '3')];
    expect([r2, r1, rd].map((r) => r.releases.map((x) => x.status))).toEqual([['published'], ['published'], ['published']]);
    const said = (path: string, name: string) => `${path}: the root file system holds "${name}" more than once: Docker's import (its classic image store) refuses such a tar ("duplicates of file paths not supported"), so those consumers will fail to load it; containerd and Podman take the last copy`;
    expect([r2.warnings, r1.warnings, rd.warnings]).toEqual([[said(twice, 'etc/motd')], undefined, [said(dirTwice, 'etc')]]);
  });
});

describe('publishArchive --kind rootfs: a root file system that holds a manifest.json of its own', () => {
  const files = () => tarBytes([{ name: 'manifest.json', data: Buffer.from('{"name":"my web app"}') }, { name: 'app/layer.tar', data: tarBytes([{ name: 'x', data: Buffer.alloc(600, 7) }]) }, { name: 'etc/hostname', data: Buffer.from('box\n') }]);

  it('from a file and from a pipe: one rootfs release of one layer (nothing stored for the inner "layer"); without --kind it is refused and nothing is written', async () => {
    const path = join(await tempDir(), 'export.tar');
    await writeFile(path, files());
    const refused = new MemoryTransport();
    await expect(publishArchive(new Repository(refused), path, { ...opts, create: true, name: { name: 'box/web', tag: '1' } })).rejects.toMatchObject({ code: 'BAD_INPUT' });
    expect([...refused.files.keys()]).toEqual([]);
    for (const from of ['file', 'pipe'] as const) {
      const t = new MemoryTransport();
      const logged = new FaultyTransport(t);
      const g = from === 'pipe' ? await growing(path) : undefined;
      const publishing = publishArchive(new Repository(logged), g ? g.source : path, { ...opts, kind: 'rootfs', create: true, name: { name: 'box/web', tag: '1' } });
      const [r] = await Promise.all([publishing, g?.finish()]);
      expect(r.releases.map((x) => [x.kind, x.status]), from).toEqual([['rootfs', 'published']]);
      expect(r.uploadedObjects, from).toBe(1);
      // from a pipe too, the inner "layer" is never stored early (then dropped): one upload, the root file system's
      expect(logged.log.filter((c) => /^write blobs\//.test(c)), from).toHaveLength(1);
      const { record } = await new Repository(t).readRecord((await new Repository(t).listReleases('box/web', '1')).at(-1)!);
      expect(record.layers.map((l) => l.diffId), from).toEqual([`sha256:${sha256(files()).slice(7)}`]);
    }
  });
});

describe('publishArchive: one layer entry listed for two diff_ids', () => {
  /** A docker save archive whose manifest.json lists l1/layer.tar twice, for the config's diff_ids `[its own, other]`. */
  async function twice(other: string): Promise<{ path: string; own: string }> {
    const layer = tarBytes([{ name: 'hello.txt', data: Buffer.from('hello\n') }]);
    const own = `sha256:${sha(layer)}`;
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [own, other] } }));
    const manifest = [{ Config: `${sha(config)}.json`, RepoTags: ['corpus/twice:1'], Layers: ['l1/layer.tar', 'l1/layer.tar'] }];
    const path = join(await tempDir(), 'twice.tar');
    await writeFile(path, tarBytes([{ name: `${sha(config)}.json`, data: config }, { name: 'l1', type: '5' }, { name: 'l1/layer.tar', data: layer }, { name: 'manifest.json', data: Buffer.from(JSON.stringify(manifest)) }]));
    return { path, own };
  }

  it.each([
    ['neither is stored yet', false, false],
    ['the second is a layer the repository holds', true, false],
    ['the release is encrypted', false, true],
  ])('is refused, naming the entry and both diff_ids, when %s; the repository is left as it was', async (_what, heldSecond, encrypted) => {
    const t = new MemoryTransport();
    await publishArchive(new Repository(t), (await demoArchives())[0]!, { ...opts, create: true });
    const held = (await new Repository(t).readRecord((await new Repository(t).listReleases('demo/app', 'latest')).at(-1)!)).record.layers[0]!.diffId;
    const other = heldSecond ? held : `sha256:${sha(Buffer.from('another layer'))}`;
    const { path, own } = await twice(other);
    const before = [...t.files.keys()].sort();
    const encryptTo = encrypted ? await recipients() : undefined;
    const e = await publishArchive(new Repository(t), path, { ...opts, ...(encryptTo ? { encryptTo } : {}) }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'BAD_INPUT', message: expect.stringContaining(`${path}: the archive entry l1/layer.tar is listed for two diff_ids, ${own} and ${other}`) });
    expect([...t.files.keys()].sort()).toEqual(before);
  });
});

async function recipients() {
  const dir = await tempDir();
  await writeFile(join(dir, 'pub'), (await generateKeyPair('unit <u@example.invalid>', { type: 'ecc' })).publicKey);
  return loadRecipients([join(dir, 'pub')]);
}

describe('an image without a name', () => {
  it('an OCI layout whose ref.name is a tag alone (skopeo oci:DIR:TAG) is refused naming why, and asks for --name', async () => {
    const { ociLayout } = await import('../../corpus/tarwriter.js');
    const layer = tarBytes([{ name: 'a.txt', data: Buffer.from('a\n') }]);
    const items = ociLayout(layer, `sha256:${sha(layer)}`, 'application/vnd.oci.image.layer.v1.tar');
    // the corpus layout names its image in full; skopeo's oci:DIR:TAG writes the tag alone
    const index = items.find((i) => i.name === 'index.json')!;
    const doc = JSON.parse(index.data!.toString()) as { manifests: { annotations?: Record<string, string> }[] };
    for (const m of doc.manifests) m.annotations = { 'org.opencontainers.image.ref.name': 'v1.2' };
    const archive = join(await tempDir(), 'oci.tar');
    await writeFile(archive, tarBytes(items.map((i) => (i === index ? { ...i, data: Buffer.from(JSON.stringify(doc)) } : i))));
    const repo = new Repository(new MemoryTransport());
    await expect(publishArchive(repo, archive, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS })).rejects.toMatchObject({
      code: 'BAD_INPUT',
      message: expect.stringContaining("an org.opencontainers.image.ref.name that is a tag alone, as skopeo's oci:DIR:TAG writes, names no image); give one with --name NAME:TAG"),
    });
  });
});

/** A --sign-key as push loads it (signerFrom), with its public key's file for a consumer's --trust. */
async function signingKey(uid: string) {
  const dir = await tempDir();
  const pair = await generateKeyPair(uid, { type: 'ecc' });
  await writeFile(join(dir, 'sec.asc'), pair.privateKey);
  await writeFile(join(dir, 'pub.asc'), pair.publicKey);
  return { sign: (await signerFrom({ signKey: join(dir, 'sec.asc') }))!, pub: join(dir, 'pub.asc'), fingerprint: pair.fingerprint };
}

describe('the same content under other protection', () => {
  const pushTo = (t: MemoryTransport, archive: string) => async (sign?: Sign) =>
    (await publishArchive(new Repository(t), archive, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' }, ...(sign ? { sign } : {}) })).releases.map((r) => [r.status, r.version]);
  const newest = async (t: MemoryTransport) => (await new Repository(t).listReleases('demo/app', '1')).at(-1)!;
  /** Where the newest release's signature lies. */
  const newestAsc = async (t: MemoryTransport) => signatureKey(recordKey('demo/app', '1', (await newest(t)).record));

  it('pushed again with a signing key where its release is unsigned: a new, signed version; once signed, unchanged', async () => {
    const t = new MemoryTransport();
    const [v1] = await demoArchives();
    const statusOf = pushTo(t, v1!);
    const { sign, fingerprint } = await signingKey('ci <ci@example.invalid>');
    expect(await statusOf()).toEqual([['published', 1]]);
    expect(await statusOf()).toEqual([['unchanged', 1]]);
    expect(await statusOf(sign)).toEqual([['published', 2]]);
    expect(await statusOf(sign)).toEqual([['unchanged', 2]]);
    const repo = new Repository(t);
    const got = (await repo.readCatalog())!;
    expect(await signatureIssuer((await repo.readCatalogSignature(got))!)).toBe(fingerprint);
  });

  it('pushed again with another signing key (the old one retired): a new version that a consumer trusting only the new key verifies; with that key again, unchanged', async () => {
    const t = new MemoryTransport();
    const [v1] = await demoArchives();
    const statusOf = pushTo(t, v1!);
    const [old, next] = [await signingKey('old <old@example.invalid>'), await signingKey('new <new@example.invalid>')];
    expect(await statusOf(old.sign)).toEqual([['published', 1]]);
    expect(await statusOf(old.sign)).toEqual([['unchanged', 1]]);
    expect(await statusOf(next.sign)).toEqual([['published', 2]]);
    expect(await statusOf(next.sign)).toEqual([['unchanged', 2]]);
    const trusted = await loadTrustedKeys([next.pub]);
    const got = await new Repository(t).readRecord(await newest(t), undefined, { verify: (data, sig, what) => verifyDetached(data, sig, trusted, what) });
    expect(got.signedBy).toBe(next.fingerprint);
  });

  it('a current release whose signature does not parse, or is larger than a signature can be: written again, signed, no fault', async () => {
    const t = new MemoryTransport();
    const [v1] = await demoArchives();
    const statusOf = pushTo(t, v1!);
    const { sign } = await signingKey('ci <ci@example.invalid>');
    const ascOf = () => newestAsc(t);
    expect(await statusOf(sign)).toEqual([['published', 1]]);
    expect(t.files.has(await ascOf())).toBe(true);
    await t.write(await ascOf(), () => Readable.from([Buffer.from('not a signature')]));
    expect(await statusOf(sign)).toEqual([['published', 2]]);
    await t.write(await ascOf(), () => Readable.from([Buffer.alloc(MAX_SIGNATURE_BYTES + 1, 0x41)]));
    expect(await statusOf(sign)).toEqual([['published', 3]]);
    expect(await statusOf(sign)).toEqual([['unchanged', 3]]);
  });

  it('a current release whose signature names this key but does not hold over its record (damaged, or another file\'s): written again, signed, and a consumer trusting the key then verifies it', async () => {
    const t = new MemoryTransport();
    const [v1] = await demoArchives();
    const statusOf = pushTo(t, v1!);
    const { sign, pub, fingerprint } = await signingKey('ci <ci@example.invalid>');
    expect(await statusOf(sign)).toEqual([['published', 1]]);
    // the key's own signature, over other bytes: it names the key as its issuer, and fails every check
    const foreign = await sign(Buffer.from('another file'));
    await t.write(await newestAsc(t), () => Readable.from([foreign]));
    expect(await statusOf(sign)).toEqual([['published', 2]]);
    expect(await statusOf(sign)).toEqual([['unchanged', 2]]);
    const trusted = await loadTrustedKeys([pub]);
    const got = await new Repository(t).readRecord(await newest(t), undefined, { verify: (data, sig, what) => verifyDetached(data, sig, trusted, what) });
    expect(got.signedBy).toBe(fingerprint);
  });

  it("an unsigned push reads no record's signature; a signed one reads the current record's only when the content is the same", async () => {
    const t = new MemoryTransport();
    const [v1, v2] = await demoArchives();
    const { sign } = await signingKey('ci <ci@example.invalid>');
    const read = t.read.bind(t);
    const asked: string[] = [];
    t.read = (key, opts) => {
      if (key.startsWith(`${RELEASES_FOLDER}/`) && key.endsWith('.asc')) asked.push(key);
      return read(key, opts);
    };
    const asks = async (push: Promise<unknown>) => {
      asked.length = 0;
      await push;
      return [...asked];
    };
    await pushTo(t, v1!)(sign);
    const current = await newestAsc(t);
    expect(await asks(pushTo(t, v1!)())).toEqual([]);
    expect(await asks(pushTo(t, v1!)(sign))).toEqual([current]);
    // other content: nothing to compare signers for (the repository's page then reads the new
    // record's own signature, to show its signer)
    expect(await asks(pushTo(t, v2!)(sign))).not.toContain(current);
  });

  it('pushed again to other recipients: a new version encrypted to them; to the same ones, unchanged', async () => {
    const t = new MemoryTransport();
    const [v1] = await demoArchives();
    const [one, two] = [await recipients(), await recipients()];
    const push = (encryptTo: Awaited<ReturnType<typeof recipients>>) => publishArchive(new Repository(t), v1!, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' }, encryptTo });
    expect((await push(one)).releases.map((r) => [r.status, r.version])).toEqual([['published', 1]]);
    expect((await push(one)).releases.map((r) => [r.status, r.version])).toEqual([['unchanged', 1]]);
    expect((await push([...one, ...two])).releases.map((r) => [r.status, r.version])).toEqual([['published', 2]]);
    const repo = new Repository(t);
    const v2 = (await repo.readRecord((await repo.listReleases('demo/app', '1')).at(-1)!)).record;
    expect(v2.layers.every((l) => l.encryption?.recipients.length === 2)).toBe(true);
  });
});

describe('publishArchive: a compressed layer of little but zeros (a preallocated file, a disk image)', () => {
  /** An OCI layout whose one gzip layer is a tar of `mib` MiB of zeros in one file: what skopeo and podman write for `dd if=/dev/zero`. */
  async function zerosLayout(mib: number): Promise<{ path: string; diffId: string }> {
    const dir = await tempDir();
    const header = tarBytes([{ name: 'zeros', sizeField: Buffer.from((mib * MiB).toString(8).padStart(11, '0') + '\0', 'latin1') }], false);
    const tail = Buffer.alloc(1024); // the end-of-archive marker, after the file's last block
    const member = gzipSync(Buffer.alloc(16 * MiB), { level: 9 });
    const layer = Buffer.concat([gzipSync(header), ...Array.from({ length: mib / 16 }, () => member), gzipSync(tail)]);
    const h = createHash('sha256').update(header);
    const chunk = Buffer.alloc(16 * MiB);
    for (let i = 0; i < mib / 16; i++) h.update(chunk);
    const diffId = `sha256:${h.update(tail).digest('hex')}`;
    const path = join(dir, 'zeros-oci.tar');
    await writeFile(path, tarBytes(ociLayout(layer, diffId, 'application/vnd.oci.image.layer.v1.tar+gzip')));
    return { path, diffId };
  }

  it('is refused past 200 times its size by default, naming --max-expansion and leaving the repository as it was; with --max-expansion 0 it is published', async () => {
    const { path, diffId } = await zerosLayout(320);
    const t = new MemoryTransport();
    const opts = { create: true, compression: 'zstd' as const, catalogTtlMs: DEFAULT_CATALOG_TTL_MS };
    await new Repository(t).init();
    const before = [...t.files.keys()].sort();
    await expect(publishArchive(new Repository(t), path, opts)).rejects.toMatchObject({
      code: 'BAD_INPUT',
      message: expect.stringMatching(/: decompresses to more than 200 times its size \(\d+ bytes from the first \d+\): a decompression bomb, or a file of almost nothing but zeros \(a preallocated file or a disk image\); an archive you trust is read whole with --max-expansion 0 \(no limit\) or a higher ratio$/),
    });
    expect([...t.files.keys()].sort()).toEqual(before);
    const r = await publishArchive(new Repository(t), path, { ...opts, maxExpansion: 0 });
    expect(r.releases.map((x) => [x.name, x.tag, x.status])).toEqual([['corpus/oci', '1', 'published']]);
    const record = await new Repository(t).readRecord((await new Repository(t).listReleases('corpus/oci', '1'))[0]!);
    expect(record.record.layers.map((l) => l.diffId)).toEqual([diffId]);
  });
});
