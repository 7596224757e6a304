import { getEventListeners, once } from 'node:events';
import { Readable, Transform } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TarArchive, writeDemoArchives } from '../../src/archive/index.js';
import { createHash } from 'node:crypto';
import { poll, pull, type PollEvent, type PullEvent } from '../../src/consumer/index.js';
import { DockerRuntime, chainIds, type DockerApi, type ExpectedImage, type ImageName, type ImageStore, type LoadPlan, type Removal, type Runtime, type VerifiedImage, type VerifiedLoad } from '../../src/runtime/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../src/producer/index.js';
import { Repository } from '../../src/repo/index.js';
import { syncRepos } from '../../src/sync/sync.js';
import { FileTransport, MemoryTransport } from '../../src/transport/index.js';
import { SMALL, tempDir } from '../helpers.js';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { TarportError } from '../../src/errors.js';
import { signerFrom } from '../../src/cli/context.js';
import { generateKeyPair, loadTrustedKeys, type TrustedKey } from '../../src/crypto/index.js';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

/** A daemon that records what it is asked to load, and holds what it loaded. */
class FakeDaemon implements DockerApi {
  readonly endpoint = 'fake://daemon';
  readonly loads: string[][] = [];
  private readonly images = new Map<string, { Id: string; layers: string[] }>();
  /** Every image by ID, named or not: a daemon keeps an image whose last tag moved on (dangling). */
  private readonly byId = new Map<string, { Id: string; layers: string[] }>();

  constructor(private readonly store: ImageStore) {}

  async imageStore() {
    return this.store;
  }

  async version() {
    return { Os: 'linux', Arch: 'amd64' };
  }

  async layerChainIds() {
    const out = new Set<string>();
    for (const im of this.byId.values()) for (const c of chainIds(im.layers)) out.add(c);
    return out;
  }

  async inspectImage(ref: string) {
    // by name, or by ID as the daemon answers both; RepoTags: every name on that image
    const im = this.images.get(ref) ?? this.byId.get(ref);
    return im ? { Id: im.Id, RootFS: { Layers: im.layers }, RepoTags: [...this.images].filter(([, v]) => v.Id === im.Id).map(([k]) => k) } : undefined;
  }

  async load(archive: Readable): Promise<string[]> {
    const dir = await tempDir();
    const p = join(dir, 'load.tar');
    await pipeline(archive, createWriteStream(p));
    const t = await TarArchive.open(p);
    const m = JSON.parse((await t.readEntry('manifest.json')).toString())[0];
    const cfg = JSON.parse((await t.readEntry(m.Config)).toString());
    const have = await this.layerChainIds();
    const chains = chainIds(cfg.rootfs.diff_ids);
    // like moby: a missing layer file is fine only when the daemon has that chain already
    m.Layers.forEach((l: string, i: number) => {
      if (!t.entries.has(l) && (this.store === 'containerd' || !have.has(chains[i]!))) throw new Error(`layer ${l} missing from the load archive`);
    });
    this.loads.push(m.Layers.filter((l: string) => t.entries.has(l)));
    const image = { Id: `sha256:${m.Config.replace('.json', '')}`, layers: cfg.rootfs.diff_ids };
    this.byId.set(image.Id, image);
    for (const tag of m.RepoTags) this.images.set(tag, image);
    return [];
  }

  async import(): Promise<string> {
    throw new Error('not used');
  }

  /** `docker tag`: one more name on the image that `name` names. */
  tagAs(name: string, another: string): void {
    this.images.set(another, this.images.get(name)!);
  }

  async removeImage(id: string): Promise<boolean> {
    for (const [k, v] of this.images) if (v.Id === id) this.images.delete(k);
    return this.byId.delete(id);
  }
}

let mem: MemoryTransport;
// the two demo archives, written once per file: the tests only read them. The tamper tests pick
// the base layer as the one object over 100 KB: 256 KiB of random data
let demo: Promise<string[]> | undefined;
const demoArchives = () => (demo ??= tempDir().then((d) => writeDemoArchives(d, undefined, 4 * SMALL)));

async function repoWithDemo(): Promise<Repository> {
  mem = new MemoryTransport();
  const repo = new Repository(mem);
  const [v1, v2] = await demoArchives();
  await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
  await publishArchive(repo, v2!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '2' } });
  return repo;
}

/** The poll agent on `repo` (a fake daemon, a fresh state) until `enough` says so; every event it said. */
async function pollUntil(repo: Repository, enough: (e: PollEvent, events: readonly PollEvent[]) => boolean, trust?: readonly TrustedKey[]): Promise<PollEvent[]> {
  const stop = new AbortController();
  const events: PollEvent[] = [];
  await poll(repo, new DockerRuntime(new FakeDaemon('graphdriver')), {
    subscriptions: [],
    ...(trust ? { trust } : {}),
    stateDir: await tempDir(),
    intervalMs: 5,
    signal: stop.signal,
    onEvent: (e) => {
      events.push(e);
      if (enough(e, events)) stop.abort();
    },
  });
  return events;
}

describe('a repository with nothing published yet', () => {
  it('poll says so once, then each round is "nothing new" (no info line a round until the first push)', async () => {
    const t = new MemoryTransport();
    const repo = new Repository(t);
    await repo.init(); // tarport init: the identity, nothing else
    expect(await repo.identity()).toBeDefined();
    const events = await pollUntil(repo, (_e, all) => all.filter((x) => x.kind === 'round').length >= 3);
    expect(events.filter((e) => e.kind === 'empty')).toHaveLength(1);
    expect(events.filter((e) => e.kind === 'idle').length).toBeGreaterThanOrEqual(2);
    expect(events.filter((e) => e.kind === 'round').every((e) => e.kind === 'round' && e.ok)).toBe(true);
  });

  it('a catalog gone from a repository this host took one from before (a mirror that hides it, no listing) is NOT_FOUND, not "empty"', async () => {
    const t = new MemoryTransport('mirror');
    const repo = new Repository(t);
    const [v1] = await demoArchives();
    await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    const rt = new DockerRuntime(new FakeDaemon('graphdriver'));
    const stateDir = await tempDir();
    expect((await pull(repo, rt, { subscriptions: [], stateDir })).loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    // what such a mirror shows: the identity, no catalog, and (no listing) no releases
    for (const k of [...t.files.keys()]) if (k !== 'tarport/format.json') t.files.delete(k);
    await expect(pull(repo, rt, { subscriptions: [], stateDir })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: 'memory://mirror holds no catalog (tarport/catalog.json), but this host accepted its catalog at sequence 1 before: a mirror or cache that hides it, or the catalog lost; run \'tarport repair\' on the repository if it is lost',
    });
    // another host, that never took a catalog from it, still finds a repository with nothing published yet
    expect((await pull(repo, rt, { subscriptions: [], stateDir: await tempDir() })).loaded).toEqual([]);
  });
});

describe('a transfer that ends short, as if whole', () => {
  it('a config and a record cut once by a lying server: poll retries them (transient) and loads, never skips the release', async () => {
    const t = new MemoryTransport();
    Object.defineProperty(t, 'capabilities', { value: { ...t.capabilities, local: false } }); // over a link
    const repo = new Repository(t);
    const [v1] = await demoArchives();
    await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    // every record and every small object (the config) is answered short once, and ended cleanly
    const cut = new Set<string>();
    const read = t.read.bind(t);
    t.read = async (key, o) => {
      const whole = t.files.get(key);
      const small = key.startsWith('tarport/releases/') ? !key.endsWith('.asc') : key.startsWith('blobs/') && (whole?.length ?? 0) < 4096;
      if (!small || cut.has(key) || !whole) return read(key, o);
      cut.add(key);
      return Readable.from([whole.subarray(0, whole.length - 10)]);
    };
    const events = await pollUntil(repo, (e, all) => e.kind === 'loaded' || all.filter((x) => x.kind === 'round').length >= 8);
    expect(events.filter((e) => e.kind === 'skipping')).toEqual([]);
    // one retry per object cut, each named with the bytes that came and those expected
    // the record and the config are read whole; a layer goes through the cache, which says "download"
    const recordKey = [...cut].find((k) => k.startsWith('tarport/releases/'))!;
    const config = (JSON.parse(t.files.get(recordKey)!.toString()) as { config: { digest: string } }).config.digest;
    const said = (key: string) => {
      const n = t.files.get(key)!.length;
      const digest = `sha256:${key.slice('blobs/sha256/'.length)}`;
      if (key === recordKey) return `release record demo/app:1 v1 (${key}): the transfer ended after ${n - 10} of the ${n} bytes the catalog pins`;
      if (digest === config) return `object ${digest} in memory://test: the transfer ended after ${n - 10} of ${n} bytes`;
      return `download ${digest} from memory://test: the transfer ended after ${n - 10} of ${n} bytes`;
    };
    const retried = events.flatMap((e) => (e.kind === 'retrying' ? [[e.code, e.message]] : []));
    expect(retried).toEqual([...cut].map((k) => ['CONNECTION', said(k)]));
    expect(events.filter((e) => e.kind === 'loaded').map((e) => e.kind === 'loaded' && e.ref)).toEqual(['demo/app:1']);
    expect([...cut].filter((k) => k.startsWith('tarport/releases/'))).toHaveLength(1);
  });
});

describe('a signature cut short, as if whole', () => {
  /** A repository over a link holding demo/app:1, pushed signed; the keys a consumer trusts. */
  async function signedOverALink() {
    const t = new MemoryTransport();
    Object.defineProperty(t, 'capabilities', { value: { ...t.capabilities, local: false } });
    const dir = await tempDir();
    const pair = await generateKeyPair('ci <ci@example.invalid>', { type: 'ecc' });
    await writeFile(join(dir, 'sec.asc'), pair.privateKey);
    await writeFile(join(dir, 'pub.asc'), pair.publicKey);
    const [v1] = await demoArchives();
    const sign = (await signerFrom({ signKey: join(dir, 'sec.asc') }))!;
    await publishArchive(new Repository(t), v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' }, sign });
    return { t, trust: await loadTrustedKeys([join(dir, 'pub.asc')]) };
  }

  it('the signatures of the catalog and of a record, each answered short once by a lying server: poll retries (transient) and loads, never skips the release', async () => {
    const { t, trust } = await signedOverALink();
    // the catalog's twice: pull reads a catalog and its signature again once, in the round, for a
    // producer caught between writing the two
    const cut = new Map<string, number>();
    const reads = new Map<string, number>();
    const read = t.read.bind(t);
    t.read = async (key, o) => {
      const whole = t.files.get(key);
      reads.set(key, (reads.get(key) ?? 0) + 1);
      if (!key.endsWith('.asc') || !whole || reads.get(key)! > (key.startsWith('tarport/catalogs/') ? 2 : 1)) return read(key, o);
      cut.set(key, whole.length - 40); // the end line's last dashes and the newline are lost
      return Readable.from([whole.subarray(0, whole.length - 40)]);
    };
    const events = await pollUntil(new Repository(t), (e, all) => e.kind === 'loaded' || all.filter((x) => x.kind === 'round').length >= 8, trust);
    expect(events.filter((e) => e.kind === 'skipping')).toEqual([]);
    expect([...cut.keys()].map((k) => k.replace(/[0-9a-f]{12,}/g, 'X'))).toEqual(['tarport/catalogs/X-X.json.asc', 'tarport/releases/demo%2Fapp/1/00000001-X.json.asc']);
    // the catalog's is a failed round, tried again after the back-off; the record's, its release's
    const said = ([key, n]: [string, number]) => {
      const catalog = key.startsWith('tarport/catalogs/');
      return [catalog ? 'poll-failed' : 'retrying', 'CONNECTION', `${catalog ? 'signature of the catalog' : `signature of ${key.slice(0, -4)}`} (${key}): the transfer ended after ${n} of the ${n + 40} bytes the server lists, before the end of the signature's armor`];
    };
    expect(events.flatMap((e) => (e.kind === 'retrying' || e.kind === 'poll-failed' ? [[e.kind, e.code, e.message]] : []))).toEqual([...cut].map(said));
    expect(events.filter((e) => e.kind === 'loaded').map((e) => e.kind === 'loaded' && e.ref)).toEqual(['demo/app:1']);
  });

  it.each([
    ['over a link, where the server lists it at the size that came (the file itself is short)', false],
    ["on this host's disk (a stick)", true],
  ])('a signature file that is itself short, %s, is damage: refused (UNTRUSTED), not tried again', async (_where, local) => {
    const { t, trust } = await signedOverALink();
    Object.defineProperty(t, 'capabilities', { value: { ...t.capabilities, local } });
    const asc = [...t.files.keys()].find((k) => k.startsWith('tarport/releases/') && k.endsWith('.asc'))!;
    t.files.set(asc, t.files.get(asc)!.subarray(0, t.files.get(asc)!.length - 40));
    const r = await pull(new Repository(t), new DockerRuntime(new FakeDaemon('graphdriver')), { subscriptions: [], stateDir: await tempDir(), trust, throwOnRefused: false });
    expect(r.refused.map((f) => [f.code, f.message.replace(/\(.*$/, '')])).toEqual([['UNTRUSTED', 'release demo/app:1 v1: unreadable signature ']]);
  });
});

describe('a file that is short on this host\'s disk (a damaged stick)', () => {
  it('is damage, refused (DIGEST_MISMATCH), not a cut transfer to try again for ever', async () => {
    const t = new MemoryTransport();
    expect(t.capabilities.local).toBe(true);
    const repo = new Repository(t);
    const [v1] = await demoArchives();
    await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    const record = [...t.files.keys()].find((k) => k.startsWith('tarport/releases/') && k.endsWith('.json'))!;
    t.files.set(record, t.files.get(record)!.subarray(0, 100));
    const r = await pull(repo, new DockerRuntime(new FakeDaemon('graphdriver')), { subscriptions: [], stateDir: await tempDir(), throwOnRefused: false });
    expect(r.refused.map((f) => f.code)).toEqual(['DIGEST_MISMATCH']);
    expect(r.refused[0]!.message).toMatch(/: digest mismatch, the catalog pins sha256:[0-9a-f]{64} \(\d+ bytes\), the file has sha256:[0-9a-f]{64} \(100 bytes\)$/);
  });
});

describe('the platform loaded for', () => {
  it('a multi-platform release loaded for one platform is loaded again when another is asked for, not "up to date"', async () => {
    const { multiPlatform, tarBytes } = await import('../corpus/tarwriter.js');
    const mp = multiPlatform({ shape: 'nested', ref: 'demo/multi:1' });
    const archive = join(await tempDir(), 'multi.tar');
    await writeFile(archive, tarBytes(mp.items));
    mem = new MemoryTransport();
    const repo = new Repository(mem);
    await publishArchive(repo, archive, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS });
    const d = new FakeDaemon('graphdriver');
    const rt = new DockerRuntime(d);
    const state = await tempDir();
    const amd = await pull(repo, rt, { subscriptions: [], stateDir: state });
    expect(amd.loaded.map((l) => [l.ref, l.imageId])).toEqual([['demo/multi:1', mp.amd64.config]]);
    const arm = await pull(repo, rt, { subscriptions: [], stateDir: state, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
    expect(arm.upToDate).toEqual([]);
    expect(arm.loaded.map((l) => [l.ref, l.imageId])).toEqual([['demo/multi:1', mp.arm64.config]]);
    expect((await pull(repo, rt, { subscriptions: [], stateDir: state, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } })).upToDate).toEqual(['demo/multi:1']);
    // the flag dropped: the runtime's own platform again
    expect((await pull(repo, rt, { subscriptions: [], stateDir: state })).loaded.map((l) => l.imageId)).toEqual([mp.amd64.config]);
  });
});

describe('retention (--keep-images)', () => {
  /** demo/app:1 loaded at v1, then v2 of demo/app:1 published: the pull to come moves the tag. */
  async function movedTag(): Promise<{ repo: Repository; d: FakeDaemon; rt: DockerRuntime; state: string; v1Id: string }> {
    mem = new MemoryTransport();
    const repo = new Repository(mem);
    const [v1, v2] = await demoArchives();
    const publish = (a: string) => publishArchive(repo, a, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    await publish(v1!);
    const d = new FakeDaemon('graphdriver');
    const rt = new DockerRuntime(d);
    const state = await tempDir();
    await pull(repo, rt, { subscriptions: [], stateDir: state, keepImages: 0 });
    const v1Id = (await d.inspectImage('demo/app:1'))!.Id;
    await publish(v2!);
    return { repo, d, rt, state, v1Id };
  }

  it('removes the earlier image once no name is left on it', async () => {
    const { repo, d, rt, state, v1Id } = await movedTag();
    const events: PullEvent[] = [];
    await pull(repo, rt, { subscriptions: [], stateDir: state, keepImages: 0, onEvent: (e) => events.push(e) });
    expect(events.filter((e) => e.kind === 'removed-image')).toEqual([{ kind: 'removed-image', ref: 'demo/app:1', imageId: v1Id }]);
    expect(await d.inspectImage(v1Id)).toBeUndefined();
  });

  it('keeps an earlier image the user gave a name of their own, and says so', async () => {
    const { repo, d, rt, state, v1Id } = await movedTag();
    d.tagAs('demo/app:1', 'mine/app:old');
    const events: PullEvent[] = [];
    await pull(repo, rt, { subscriptions: [], stateDir: state, keepImages: 0, onEvent: (e) => events.push(e) });
    expect(events.filter((e) => e.kind === 'removed-image')).toEqual([]);
    expect(events.filter((e) => e.kind === 'warning')).toEqual([{ kind: 'warning', message: `kept ${v1Id.slice(0, 19)}, an earlier image of demo/app:1: it is still named mine/app:old; tried again on later runs` }]);
    expect((await d.inspectImage('mine/app:old'))?.Id).toBe(v1Id);
    // tried again on the next run (up to date), kept again, and not said again
    const again: PullEvent[] = [];
    const r = await pull(repo, rt, { subscriptions: [], stateDir: state, keepImages: 0, onEvent: (e) => again.push(e) });
    expect(r.upToDate).toEqual(['demo/app:1']);
    expect(again.filter((e) => e.kind === 'warning' || e.kind === 'removed-image')).toEqual([]);
    expect((await d.inspectImage('mine/app:old'))?.Id).toBe(v1Id);
  });
});

describe('consumer load archives per image store', () => {
  it('graphdriver: the second load leaves out the layers the daemon has', async () => {
    const repo = await repoWithDemo();
    const d = new FakeDaemon('graphdriver');
    const rt = new DockerRuntime(d);
    const state = await tempDir();
    await pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: state });
    await pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '2' }], stateDir: state });
    expect(d.loads.map((l) => l.length)).toEqual([2, 1]);
  });

  it('containerd: every load archive is complete, from the cache, without fetching again', async () => {
    const repo = await repoWithDemo();
    const d = new FakeDaemon('containerd');
    const rt = new DockerRuntime(d);
    const state = await tempDir();
    const r1 = await pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: state });
    const r2 = await pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '2' }], stateDir: state });
    expect(d.loads.map((l) => l.length)).toEqual([2, 3]);
    // v2's shared layers came from the cache: it fetched far less than v1 did
    expect(r2.bytesFetched).toBeLessThan(r1.bytesFetched / 10);
  });

  it('a second run with nothing new loads nothing', async () => {
    const repo = await repoWithDemo();
    const d = new FakeDaemon('graphdriver');
    const rt = new DockerRuntime(d);
    const state = await tempDir();
    await pull(repo, rt, { subscriptions: [], stateDir: state });
    const again = await pull(repo, rt, { subscriptions: [], stateDir: state });
    expect(again.loaded).toEqual([]);
    expect(again.upToDate.sort()).toEqual(['demo/app:1', 'demo/app:2']);
    expect(d.loads).toHaveLength(2);
  });

  it('a tampered object is refused before the daemon sees a byte', async () => {
    const repo = await repoWithDemo();
    for (const [k, v] of mem.files) {
      if (k.startsWith('blobs/') && v.length > 100_000) mem.files.set(k, Buffer.concat([v.subarray(0, 1000), Buffer.alloc(v.length - 1000)]));
    }
    const d = new FakeDaemon('graphdriver');
    const rt = new DockerRuntime(d);
    await expect(pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() })).rejects.toThrow(/digest mismatch/);
    expect(d.loads).toHaveLength(0);
  });

  it('a tampered object read in place that no longer decompresses fails with its digest fault (exit 3), not as bad zstd', async () => {
    const repo = await repoWithDemo();
    expect(repo.isLocal).toBe(true);
    let tampered = 0;
    for (const [k, v] of mem.files) {
      if (!k.startsWith('blobs/') || v.length < 100_000) continue;
      // the zstd frame and first block headers: the decompressor fails long before the digest ends
      const bad = Buffer.from(v);
      bad.fill(0xff, 4, 16);
      mem.files.set(k, bad);
      tampered++;
    }
    expect(tampered).toBeGreaterThan(0);
    const d = new FakeDaemon('graphdriver');
    const err = await pull(repo, new DockerRuntime(d), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(d.loads).toHaveLength(0);
  });

  it('a tampered layer behind a good one (fetched while the load runs) fails the pull with its digest fault and loads nothing', async () => {
    const repo = await repoWithDemo();
    const { record } = await repo.readRecord((await repo.listReleases('demo/app', '1')).at(-1)!);
    const last = record.layers.at(-1)!;
    expect(record.layers.length).toBeGreaterThan(1);
    const key = `blobs/sha256/${last.digest.slice('sha256:'.length)}`;
    const v = mem.files.get(key)!;
    mem.files.set(key, Buffer.concat([v.subarray(0, v.length - 1), Buffer.from([v[v.length - 1]! ^ 1])]));
    // as over FTP or SFTP: objects go through the cache (a local repository is read in place)
    Object.defineProperty(mem, 'capabilities', { value: { ...mem.capabilities, local: false } });
    expect(repo.isLocal).toBe(false);
    const d = new FakeDaemon('graphdriver');
    const err = await pull(repo, new DockerRuntime(d), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(d.loads).toHaveLength(0);
  });
});

/** A fake daemon that counts the load archive's bytes as they reach it. */
class CountingDaemon extends FakeDaemon {
  received = 0;
  private watchers: { at: number; resolve: () => void }[] = [];

  /** Settles once the daemon received `n` bytes of a load archive; false after `ms` without. */
  receivedAtLeast(n: number, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.watchers.push({
        at: n,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      });
      this.check();
    });
  }

  private check(): void {
    for (const w of this.watchers.filter((x) => this.received >= x.at)) w.resolve();
    this.watchers = this.watchers.filter((x) => this.received < x.at);
  }

  override async load(archive: Readable): Promise<string[]> {
    const counted = new Transform({
      transform: (c: Buffer, _e, cb) => {
        this.received += c.length;
        this.check();
        cb(null, c);
      },
    });
    const [loaded] = await Promise.all([super.load(counted), pipeline(archive, counted)]);
    return loaded;
  }
}

describe('a remote repository: layers go to the runtime as they download', () => {
  /** A repository as over FTP or SFTP (through the cache), of one image with an 8 MiB base layer. */
  async function remoteRepo() {
    // the cache hands a download over in reads of 1 MiB, the decompressor passes on whole 1 MiB
    // buffers, and the layer's last buffer waits for its digest
    const mem = new MemoryTransport();
    const repo = new Repository(mem);
    const [v1] = await writeDemoArchives(await tempDir(), undefined, 8 << 20);
    await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    const { record } = await repo.readRecord((await repo.listReleases('demo/app', '1')).at(-1)!);
    const big = record.layers.reduce((a, b) => (b.size > a.size ? b : a));
    expect(big.size).toBeGreaterThan(8 << 20);
    Object.defineProperty(mem, 'capabilities', { value: { ...mem.capabilities, local: false } });
    expect(repo.isLocal).toBe(false);
    return { mem, repo, bigKey: `blobs/sha256/${big.digest.slice('sha256:'.length)}` };
  }

  /**
   * The big layer's first half is sent, then the rest only once the daemon has received 512 KiB
   * (config and headers are a few KiB: the rest is the layer), or after 5 s without; `seen` says
   * which.
   */
  function sendSecondHalfOnceLoading(mem: MemoryTransport, bigKey: string, d: CountingDaemon): boolean[] {
    const seen: boolean[] = [];
    const readTo = mem.readTo.bind(mem);
    mem.readTo = async (key, sink, opts) => {
      if (key !== bigKey) return readTo(key, sink, opts);
      const all = mem.files.get(key)!;
      const half = Math.floor(all.length / 2);
      await sink(all.subarray(0, half));
      seen.push(await d.receivedAtLeast(512 << 10, 5000));
      await sink(all.subarray(half));
      return all.length;
    };
    return seen;
  }

  it('the daemon receives a layer while it is still downloading', async () => {
    const { mem, repo, bigKey } = await remoteRepo();
    const d = new CountingDaemon('graphdriver');
    const seen = sendSecondHalfOnceLoading(mem, bigKey, d);
    const r = await pull(repo, new DockerRuntime(d), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() });
    expect(seen).toEqual([true]);
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    expect(d.loads).toHaveLength(1);
  });

  it('a layer whose last byte is wrong, streamed to the daemon as it downloads, fails the pull with its digest fault and loads nothing', async () => {
    const { mem, repo, bigKey } = await remoteRepo();
    const v = mem.files.get(bigKey)!;
    mem.files.set(bigKey, Buffer.concat([v.subarray(0, v.length - 1), Buffer.from([v[v.length - 1]! ^ 1])]));
    const d = new CountingDaemon('graphdriver');
    const seen = sendSecondHalfOnceLoading(mem, bigKey, d);
    const err = await pull(repo, new DockerRuntime(d), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() }).catch((e: unknown) => e);
    expect(seen).toEqual([true]);
    expect(err).toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(d.loads).toHaveLength(0);
  });
});

describe('rollback state follows the repository, not its location', () => {
  const copy = (t: MemoryTransport, name: string) => {
    const c = new MemoryTransport(name);
    for (const [k, v] of t.files) c.files.set(k, v);
    return c;
  };
  const push = async (t: MemoryTransport, which: number, tag: string) => {
    const archives = await demoArchives();
    await publishArchive(new Repository(t), archives[which]!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag } });
  };

  it('an older copy at another location is refused (ROLLBACK) and leaves the state; a newer one is loaded next', async () => {
    const origin = new MemoryTransport('origin');
    await push(origin, 0, '1');
    const oldStick = copy(origin, 'stick-old');
    await push(origin, 1, '1');
    const newStick = copy(origin, 'stick-new');
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    const follow = [{ name: 'demo/app', tag: '1' }];
    expect((await pull(new Repository(newStick), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).loaded.map((l) => l.version)).toEqual([2]);
    await expect(pull(new Repository(oldStick), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).rejects.toMatchObject({ code: 'ROLLBACK' });
    expect(d.loads.length).toBe(1);
    await push(origin, 0, '1'); // v3
    const r = await pull(new Repository(copy(origin, 'stick-next')), new DockerRuntime(d), { subscriptions: follow, stateDir: state });
    expect(r.loaded.map((l) => l.version)).toEqual([3]);
  });

  it('a full stick after an --only stick (whose merged catalog ran ahead of its source): nothing goes back, and the tags the first stick did not carry are loaded', async () => {
    const origin = new MemoryTransport('origin');
    await push(origin, 0, '1');
    await push(origin, 1, 'other');
    const only = new MemoryTransport('stick-only');
    await syncRepos(new Repository(origin), new Repository(only), { create: true, catalogTtlMs: DEFAULT_CATALOG_TTL_MS, only: [{ name: 'demo/app', tag: '1' }] });
    const full = new MemoryTransport('stick-full');
    await syncRepos(new Repository(origin), new Repository(full), { create: true, catalogTtlMs: DEFAULT_CATALOG_TTL_MS });
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    const follow = [{ name: 'demo/app' }];
    expect((await pull(new Repository(only), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    const events: PullEvent[] = [];
    const r = await pull(new Repository(full), new DockerRuntime(d), { subscriptions: follow, stateDir: state, onEvent: (e) => events.push(e) });
    expect(r.refused).toEqual([]);
    expect(r.upToDate).toEqual(['demo/app:1']);
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:other']);
    expect(events).toContainEqual(expect.objectContaining({ kind: 'warning', message: expect.stringContaining('an older copy; no tag goes back through it') }));
  });

  it('a release of the same version ordered before the one loaded (two producers wrote v1) is refused as going back', async () => {
    const origin = new MemoryTransport('origin');
    await push(origin, 0, '1');
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    const follow = [{ name: 'demo/app', tag: '1' }];
    expect((await pull(new Repository(origin), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).loaded).toHaveLength(1);
    // what the state says was loaded: the other producer's v1, whose file name sorts after this one's
    const file = join(state, 'state.json');
    const saved = JSON.parse(await readFile(file, 'utf8')) as { loaded: Record<string, Record<string, { record: string; digest: string }>> };
    const loaded = Object.values(saved.loaded)[0]!['demo/app:1']!;
    Object.assign(loaded, { record: '00000001-ffffffffffffffff.json', digest: `sha256:${'f'.repeat(64)}` });
    await writeFile(file, JSON.stringify(saved));
    const err = await pull(new Repository(origin), new DockerRuntime(d), { subscriptions: follow, stateDir: state }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ROLLBACK', message: expect.stringContaining('ordered before 00000001-ffffffffffffffff.json: two producers wrote v1') });
    expect(d.loads).toHaveLength(1);
  });

  it('an older stick that carries nothing but what was loaded is up to date, in either order', async () => {
    const origin = new MemoryTransport('origin');
    await push(origin, 0, '1');
    const a = copy(origin, 'stick-a');
    await push(origin, 1, 'other'); // only another tag changes: sequence grows
    const b = copy(origin, 'stick-b');
    const follow = [{ name: 'demo/app', tag: '1' }];
    for (const order of [[a, b], [b, a]]) {
      const d = new FakeDaemon('graphdriver');
      const state = await tempDir();
      const first = await pull(new Repository(order[0]!), new DockerRuntime(d), { subscriptions: follow, stateDir: state });
      const second = await pull(new Repository(order[1]!), new DockerRuntime(d), { subscriptions: follow, stateDir: state });
      expect(first.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
      expect(second.upToDate).toEqual(['demo/app:1']);
    }
  });
});

describe('a tag loaded from one repository goes forward only, whichever repository offers it next', () => {
  const push = async (t: MemoryTransport, which: number) => {
    const archives = await demoArchives();
    await publishArchive(new Repository(t), archives[which]!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
  };
  const follow = [{ name: 'demo/app', tag: '1' }];

  it('another repository (same tag, own id) whose release was created before the one loaded is refused (ROLLBACK); a newer push there is loaded', async () => {
    const other = new MemoryTransport('other');
    await push(other, 0); // created first: the older release
    const main = new MemoryTransport('main');
    await push(main, 1);
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    expect((await pull(new Repository(main), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    const err = await pull(new Repository(other), new DockerRuntime(d), { subscriptions: follow, stateDir: state }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ROLLBACK' });
    expect((err as Error).message).toContain('demo/app:1: memory://other offers v1 created');
    expect(d.loads).toHaveLength(1);
    await push(other, 1); // a newer push there: v2 of that repository
    const r = await pull(new Repository(other), new DockerRuntime(d), { subscriptions: follow, stateDir: state });
    expect(r.loaded.map((l) => l.version)).toEqual([2]);
    expect(d.loads).toHaveLength(2);
  });

  it('one image pushed to two repositories is no rollback: the repository pushed first is pulled after the other without refusal', async () => {
    const first = new MemoryTransport('first');
    await push(first, 1);
    const second = new MemoryTransport('second');
    await push(second, 1); // the same image, created later
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    expect((await pull(new Repository(second), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).loaded).toHaveLength(1);
    const r = await pull(new Repository(first), new DockerRuntime(d), { subscriptions: follow, stateDir: state });
    expect(r.refused).toEqual([]);
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
  });

  it('two repositories that take turns: the one whose release is older is refused once the newer was loaded, and loads nothing back', async () => {
    const a = new MemoryTransport('a');
    await push(a, 0);
    const b = new MemoryTransport('b');
    await push(b, 1);
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    expect((await pull(new Repository(a), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).loaded).toHaveLength(1);
    expect((await pull(new Repository(b), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).loaded).toHaveLength(1);
    // this host's clock stepped back after b's load: the order of loads is the state's, not the
    // clock's; and b's load is recorded under another spelling of the name (Docker's rules: one name)
    const file = join(state, 'state.json');
    const saved = JSON.parse(await readFile(file, 'utf8')) as { loaded: Record<string, Record<string, { loadedAt: string }>> };
    for (const [k, tags] of Object.entries(saved.loaded)) {
      if (k === Object.keys(saved.loaded)[0]) continue;
      tags['docker.io/demo/app:1'] = { ...tags['demo/app:1']!, loadedAt: '2000-01-01T00:00:00.000Z' };
      delete tags['demo/app:1'];
    }
    await writeFile(file, JSON.stringify(saved));
    // a's release is what its state loaded, but the runtime's tag now holds b's newer image
    await expect(pull(new Repository(a), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).rejects.toMatchObject({ code: 'ROLLBACK' });
    expect(d.loads).toHaveLength(2);
    // b's own release goes on being taken (its state entry is under the other spelling: loaded again)
    expect((await pull(new Repository(b), new DockerRuntime(d), { subscriptions: follow, stateDir: state })).refused).toEqual([]);
  });
});

/** A runtime that fetches layers itself (as Podman from the loopback registry), or cannot (`reachable` false). */
class FetchingRuntime implements Runtime {
  readonly kind = 'podman' as const;
  readonly endpoint = 'fake://podman';
  readonly uploads: number[] = [];
  readonly pulled: string[] = [];
  private readonly images = new Map<string, string>();
  /** `has`: layers (by the digest served) the runtime holds already and does not ask for, as Podman skips them. */
  constructor(
    private readonly reachable: boolean,
    private readonly has: ReadonlySet<string> = new Set(),
  ) {}
  async platform() {
    return { os: 'linux', architecture: 'amd64' };
  }
  async plan(): Promise<LoadPlan> {
    return { format: 'docker-save', omit: new Set(), thin: false, qualifiedNames: true };
  }
  async planStored(): Promise<LoadPlan> {
    return { format: 'oci-layout-stored', omit: new Set(), thin: false, qualifiedNames: true };
  }
  async loadVerified(image: VerifiedImage, name: ImageName): Promise<VerifiedLoad> {
    if (!this.reachable) return { loaded: false, reason: 'the fake service is elsewhere' };
    // like Podman's pull: every blob is read and checked against the manifest's digest
    for (const l of image.layers) {
      if (this.has.has(l.digest)) continue;
      const bytes = await readAll(await l.open());
      if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== l.digest) throw new Error(`blob ${l.digest} does not match`);
      this.pulled.push(l.digest);
    }
    this.images.set(name.qualified, image.configDigest);
    return { loaded: true, manifestDigest: `sha256:${'0'.repeat(64)}`, via: 'pulled by the fake' };
  }
  async load(archive: Readable, name: ImageName): Promise<void> {
    const dir = await tempDir();
    await pipeline(archive, createWriteStream(join(dir, 'load.tar')));
    const t = await TarArchive.open(join(dir, 'load.tar'));
    const index = JSON.parse((await t.readEntry('index.json')).toString()) as { manifests: { digest: string }[] };
    const m = JSON.parse((await t.readEntry(`blobs/sha256/${index.manifests[0]!.digest.slice(7)}`)).toString()) as { config: { digest: string }; layers: unknown[] };
    this.uploads.push(m.layers.length);
    this.images.set(name.qualified, m.config.digest);
  }
  async importRootfs(): Promise<never> {
    throw new Error('not used');
  }
  async imageId(name: ImageName) {
    return this.images.get(name.qualified);
  }
  async verify(expected: ExpectedImage): Promise<string> {
    if (this.images.get(expected.name.qualified) !== expected.configDigest) throw new Error(`${expected.name.qualified} is not there`);
    return expected.configDigest;
  }
  async removeImage(): Promise<Removal> {
    return { removed: false };
  }
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('a runtime that fetches the layers itself (loadVerified)', () => {
  it('takes every layer as stored from the checked cache, with no archive upload, and the loaded event says how', async () => {
    const repo = await repoWithDemo();
    const rt = new FetchingRuntime(true);
    const events: PullEvent[] = [];
    const r = await pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir(), onEvent: (e) => events.push(e) });
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    expect(rt.uploads).toEqual([]);
    expect(rt.pulled).toHaveLength(2);
    expect(events.find((e) => e.kind === 'loaded')).toMatchObject({ ref: 'demo/app:1', via: 'pulled by the fake' });
  });

  it('when the runtime cannot, warns with its reason and uploads the archive from the same cache', async () => {
    const repo = await repoWithDemo();
    const rt = new FetchingRuntime(false);
    const events: PullEvent[] = [];
    const r = await pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir(), onEvent: (e) => events.push(e) });
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    expect(rt.uploads).toEqual([2]);
    expect(events.filter((e) => e.kind === 'warning')).toEqual([{ kind: 'warning', message: 'demo/app:1 v1: the fake service is elsewhere; uploading the image to podman as an archive instead' }]);
    expect(events.find((e) => e.kind === 'loaded')).not.toHaveProperty('via');
  });

  it('from a remote repository, a layer the runtime does not ask for is not downloaded', async () => {
    const repo = await repoWithDemo();
    Object.defineProperty(mem, 'capabilities', { value: { ...mem.capabilities, local: false } });
    const { record } = await repo.readRecord((await repo.listReleases('demo/app', '1')).at(-1)!);
    const [base, app] = record.layers;
    expect(base!.size).toBeGreaterThan(100_000);
    const rt = new FetchingRuntime(true, new Set([base!.digest]));
    const state = await tempDir();
    const r = await pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: state });
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    expect(rt.pulled).toEqual([app!.digest]);
    // the config and the small layer: not the base layer's 256 KiB
    expect(r.bytesFetched).toBe(app!.size + record.config!.size);
  });

  it('a tampered object fails the pull with its digest fault, and nothing is loaded or uploaded', async () => {
    const repo = await repoWithDemo();
    for (const [k, v] of mem.files) {
      if (k.startsWith('blobs/') && v.length > 100_000) mem.files.set(k, Buffer.concat([v.subarray(0, 1000), Buffer.alloc(v.length - 1000)]));
    }
    const rt = new FetchingRuntime(true);
    await expect(pull(repo, rt, { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() })).rejects.toThrow(/digest mismatch/);
    expect([rt.uploads, await rt.imageId({ familiar: 'demo/app:1', qualified: 'docker.io/demo/app:1' })]).toEqual([[], undefined]);
  });
});

describe('each release on its own', () => {
  it("leaves nothing registered with the caller's signal once it returned (an agent's signal lives for months)", async () => {
    const repo = await repoWithDemo();
    const agent = new AbortController();
    const events: PullEvent[] = [];
    const opts = { subscriptions: [], stateDir: await tempDir(), signal: agent.signal, ack: { id: 'host-1', hostname: 'edge-1', timeoutMs: 5_000 }, onEvent: (e: PullEvent) => events.push(e) };
    const r = await pull(repo, new DockerRuntime(new FakeDaemon('containerd')), opts);
    expect(r.loaded.map((l) => l.ref).sort()).toEqual(['demo/app:1', 'demo/app:2']);
    expect(events.find((e) => e.kind === 'ack')).toMatchObject({ written: true });
    expect(getEventListeners(agent.signal, 'abort')).toHaveLength(0);
  });

  it('a daemon that fails when asked whether a loaded image is still there refuses that release only; the others are still checked', async () => {
    const repo = await repoWithDemo();
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    await pull(repo, new DockerRuntime(d), { subscriptions: [], stateDir: state });
    const inspect = d.inspectImage.bind(d);
    d.inspectImage = async (ref: string) => {
      if (ref === 'demo/app:1') throw new TarportError('DAEMON', 'inspect demo/app:1: the daemon hung up');
      return inspect(ref);
    };
    const events: PullEvent[] = [];
    const r = await pull(repo, new DockerRuntime(d), { subscriptions: [], stateDir: state, throwOnRefused: false, onEvent: (e) => events.push(e) });
    expect(r.refused).toEqual([{ ref: 'demo/app:1', digest: expect.any(String), code: 'DAEMON', message: 'inspect demo/app:1: the daemon hung up' }]);
    expect(r.upToDate).toEqual(['demo/app:2']);
    expect(events.map((e) => e.kind)).toEqual(['refused', 'up-to-date']);
  });
});

describe('a runtime that fails in the middle of a load', () => {
  it('the load archive is closed, so its writer lets go of the layer it was reading', async () => {
    const repo = await repoWithDemo();
    const d = new FakeDaemon('graphdriver');
    let archive: Readable | undefined;
    d.load = async (a: Readable) => {
      archive = a;
      await once(a, 'readable');
      a.read(); // some of it, as a daemon reads before its disk fills up
      throw new TarportError('DAEMON', 'load: write /var/lib/docker/tmp/docker-import-1/layer.tar: no space left on device');
    };
    await expect(pull(repo, new DockerRuntime(d), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() })).rejects.toMatchObject({ code: 'DAEMON' });
    expect(archive?.destroyed).toBe(true);
  });

  it('a root file system whose import fails midway is closed too', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'root', 'bin'), { recursive: true });
    await writeFile(join(dir, 'root', 'bin', 'app'), randomBytes(8 << 20)); // more than the stream buffers
    execFileSync('tar', ['-C', join(dir, 'root'), '-cf', join(dir, 'export.tar'), '.']);
    mem = new MemoryTransport();
    const repo = new Repository(mem);
    await publishArchive(repo, join(dir, 'export.tar'), { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/root', tag: '1' } });
    const d = new FakeDaemon('graphdriver');
    let rootfs: Readable | undefined;
    Object.assign(d, {
      import: async (a: Readable) => {
        rootfs = a;
        await once(a, 'readable');
        a.read();
        throw new TarportError('DAEMON', 'import: no space left on device');
      },
    });
    await expect(pull(repo, new DockerRuntime(d), { subscriptions: [], stateDir: await tempDir() })).rejects.toMatchObject({ code: 'DAEMON' });
    expect(rootfs?.destroyed).toBe(true);
  });
});

describe('the hook of a load cut short', () => {
  it('runs in the next run, once, when the run that loaded the release was cancelled while its hook ran', async () => {
    // a repository on disk: its catalog has a modification time, so a cheap poll can find it unchanged
    const repo = new Repository(new FileTransport(await tempDir()));
    await publishArchive(repo, (await demoArchives())[0]!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    const marks = join(await tempDir(), 'marks');
    const hook = `echo "$TARPORT_REF $TARPORT_VERSION" >> ${marks}; true`;
    const sub = [{ name: 'demo/app', tag: '1' }];
    const stop = new AbortController();
    // the first run's hook is cut by the signal before it writes anything
    const cut: PullEvent[] = [];
    const first = await pull(repo, new DockerRuntime(d), {
      subscriptions: sub,
      stateDir: state,
      hook: `sleep 30; ${hook}`,
      signal: stop.signal,
      onEvent: (e) => (cut.push(e), e.kind === 'loaded' && setTimeout(() => stop.abort(), 200)),
    });
    expect(first.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    expect(cut.find((e) => e.kind === 'hook')).toMatchObject({ ok: false });
    expect(existsSync(marks)).toBe(false);
    const events: PullEvent[] = [];
    const second = await pull(repo, new DockerRuntime(d), { subscriptions: sub, stateDir: state, hook, onEvent: (e) => events.push(e) });
    expect(second.upToDate).toEqual(['demo/app:1']);
    expect(events.filter((e) => e.kind === 'warning')).toEqual([{ kind: 'warning', message: 'the hook for demo/app:1 v1 did not run to its end after its load (the run was cut short); running it now' }]);
    expect(events.find((e) => e.kind === 'hook')).toMatchObject({ ok: true, ref: 'demo/app:1', version: 1 });
    await pull(repo, new DockerRuntime(d), { subscriptions: sub, stateDir: state, hook });
    expect(await readFile(marks, 'utf8')).toBe('demo/app:1 1\n');
    expect(d.loads).toHaveLength(1);
  });

  it('a hook that ran to its end, even failing, is not run again', async () => {
    const repo = await repoWithDemo();
    const d = new FakeDaemon('graphdriver');
    const state = await tempDir();
    const marks = join(await tempDir(), 'marks');
    const sub = [{ name: 'demo/app', tag: '1' }];
    const hook = `echo "$TARPORT_REF" >> ${marks}; exit 4`;
    const events: PullEvent[] = [];
    await pull(repo, new DockerRuntime(d), { subscriptions: sub, stateDir: state, hook, onEvent: (e) => events.push(e) });
    await pull(repo, new DockerRuntime(d), { subscriptions: sub, stateDir: state, hook });
    expect(events.find((e) => e.kind === 'hook')).toMatchObject({ ok: false });
    expect(await readFile(marks, 'utf8')).toBe('demo/app:1\n');
  });
});
