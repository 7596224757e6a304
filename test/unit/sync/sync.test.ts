import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../../src/archive/index.js';
import { TarportError } from '../../../src/errors.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { CATALOG_KEY, Repository, checkRepository } from '../../../src/repo/index.js';
import { RECORD_FILE_RE, releaseFolder } from '../../../src/repo/layout.js';
import { chainIds } from '../../../src/runtime/index.js';
import { layersTheSiteHolds, syncRepos, type Planned, type SyncEvent } from '../../../src/sync/sync.js';
import { FileTransport, MemoryTransport, type Transport } from '../../../src/transport/index.js';
import { SMALL, filesBelow, tempDir } from '../../helpers.js';

/** A repository holding demo/app:1 and demo/app:2 (v2 shares two of its three layers with v1). */
async function demoRepo(transport: Transport): Promise<Repository> {
  const repo = new Repository(transport);
  const [v1, v2] = await writeDemoArchives(await tempDir(), undefined, SMALL);
  await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
  await publishArchive(repo, v2!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '2' } });
  return repo;
}

const blobs = (m: MemoryTransport) => [...m.files.keys()].filter((k) => k.startsWith('blobs/')).sort();
const opts = (events: SyncEvent[] = []) => ({ create: true, catalogTtlMs: DEFAULT_CATALOG_TTL_MS, onEvent: (e: SyncEvent) => events.push(e) });

describe('syncRepos between two memory repositories', () => {
  // published once (the slow part); every test syncs from it, and none changes it
  let srcT: MemoryTransport;
  let src: Repository;
  beforeAll(async () => {
    srcT = new MemoryTransport('src');
    src = await demoRepo(srcT);
  });

  it('carries every object, record and the catalog itself; a second run copies nothing', async () => {
    const dstT = new MemoryTransport('dst');
    const dst = new Repository(dstT);
    const events: SyncEvent[] = [];
    const r = await syncRepos(src, dst, opts(events));
    expect(r.releasesCopied).toBe(2);
    expect(r.objectsCopied).toBe(blobs(srcT).length);
    expect(r.objectsRepaired).toBe(0);
    expect(blobs(dstT)).toEqual(blobs(srcT));
    for (const k of blobs(srcT)) expect(dstT.files.get(k)!.equals(srcT.files.get(k)!), k).toBe(true);
    expect(dstT.files.get(CATALOG_KEY)!.equals(srcT.files.get(CATALOG_KEY)!)).toBe(true);
    expect(events).toContainEqual({ kind: 'catalog', status: 'copied', signed: false });
    const checked = await checkRepository(dst);
    expect(checked.faults).toEqual([]);
    expect(checked.releases).toBe(2);
    expect([...dstT.files.keys()].filter((k) => /tmp/.test(k))).toEqual([]);

    const again = await syncRepos(src, dst, opts());
    expect(again).toEqual({ objectsCopied: 0, bytesCopied: 0, objectsRepaired: 0, releasesCopied: 0 });
  });

  it('a sync killed after the catalog, before its derived files: the next run (catalog unchanged) writes them from it', async () => {
    const dstT = new MemoryTransport('dst');
    const dst = new Repository(dstT);
    await syncRepos(src, dst, opts());
    const derived = ['index.json', 'index.html', 'tarport/registry/view.json'];
    const whole = derived.map((k) => dstT.files.get(k)!);
    // as a run killed after catalog.json left them: the files of a run before (here: none)
    for (const k of derived) dstT.files.delete(k);
    const events: SyncEvent[] = [];
    await syncRepos(src, dst, opts(events));
    expect(events).toContainEqual({ kind: 'catalog', status: 'unchanged', signed: false });
    expect(derived.map((k) => dstT.files.get(k)?.equals(whole[derived.indexOf(k)]!))).toEqual([true, true, true]);
  });

  it('a record damaged on the destination (a cut stick) is written again, said as repaired, not "present" for ever', async () => {
    const dstT = new MemoryTransport('dst');
    const dst = new Repository(dstT);
    await syncRepos(src, dst, opts());
    const records = [...dstT.files.keys()].filter((k) => k.startsWith('tarport/releases/') && k.endsWith('.json')).sort();
    const [cut, swapped] = records;
    const whole = dstT.files.get(cut!)!;
    dstT.files.set(cut!, whole.subarray(0, 100));
    dstT.files.set(swapped!, Buffer.concat([dstT.files.get(swapped!)!, Buffer.from(' ')]));
    const events: SyncEvent[] = [];
    const r = await syncRepos(src, dst, opts(events));
    expect(r.releasesCopied).toBe(2);
    expect(events.filter((e) => e.kind === 'release').map((e) => e.kind === 'release' && e.status)).toEqual(['repaired', 'repaired']);
    expect(dstT.files.get(cut!)!.equals(whole)).toBe(true);
    expect((await checkRepository(dst)).faults).toEqual([]);
    const again: SyncEvent[] = [];
    await syncRepos(src, dst, opts(again));
    expect(again.filter((e) => e.kind === 'release').map((e) => e.kind === 'release' && e.status)).toEqual(['present', 'present']);
  });

  it('--only one tag: only its objects and record, and a merged catalog that names just it', async () => {
    const dstT = new MemoryTransport('dst');
    const dst = new Repository(dstT);
    const events: SyncEvent[] = [];
    const r = await syncRepos(src, dst, { ...opts(events), only: [{ name: 'demo/app', tag: '1' }] });
    expect(r.releasesCopied).toBe(1);
    expect(blobs(dstT).length).toBeLessThan(blobs(srcT).length);
    expect(events).toContainEqual({ kind: 'catalog', status: 'merged', signed: false });
    const cat = (await dst.readCatalog())!.catalog;
    expect(cat.releases.map((e) => `${e.name}:${e.tag}`)).toEqual(['demo/app:1']);
    expect((await checkRepository(dst)).faults).toEqual([]);
  });

  it('--only that names nothing in the source (a typo) is said as a warning, naming it and the source', async () => {
    const dst = new Repository(new MemoryTransport('dst'));
    const events: SyncEvent[] = [];
    const r = await syncRepos(src, dst, { ...opts(events), only: [{ name: 'demo/app', tag: '1' }, { name: 'demo/ap', tag: '1' }] });
    expect(r.releasesCopied).toBe(1);
    expect(events.filter((e) => e.kind === 'warning')).toEqual([{ kind: 'warning', message: `--only demo/ap:1 is not in the catalog of ${src.location}` }]);
  });

  it('objects the site already has (inventory) are not carried', async () => {
    const dst = new Repository(new MemoryTransport('dst'));
    const have = blobs(srcT).map((k) => `sha256:${k.split('/').pop()}`);
    const events: SyncEvent[] = [];
    const r = await syncRepos(src, dst, { ...opts(events), have: { schema: 'tarport.inventory/v1', created: '', source: 'site', diffIds: [], chainIds: [], objects: have, releases: {} } });
    expect(r.objectsCopied).toBe(0);
    expect(events.filter((e) => e.kind === 'object').every((e) => e.kind === 'object' && e.status === 'site-has-it')).toBe(true);
    expect(r.releasesCopied).toBe(2);
  });

  it('a layer the site\'s daemon holds is left off only when it holds the layer\'s whole chain (the layers below it too, in order)', async () => {
    const record = (tag: string) => {
      const key = [...srcT.files.keys()].find((k) => k.startsWith(`${releaseFolder('demo/app', tag)}/`) && RECORD_FILE_RE.test(k.split('/').pop()!))!;
      return JSON.parse(srcT.files.get(key)!.toString()) as { layers: { digest: string; diffId: string }[] };
    };
    const v2 = record('2').layers;
    expect(v2).toHaveLength(3);
    const inventory = (chainIds: string[]) => ({ schema: 'tarport.inventory/v1' as const, created: '', source: 'site', diffIds: v2.map((l) => l.diffId), chainIds, objects: [], releases: {} });
    const leftOff = async (chains: string[]) => {
      const events: SyncEvent[] = [];
      await syncRepos(src, new Repository(new MemoryTransport('dst')), { ...opts(events), only: [{ name: 'demo/app', tag: '2' }], have: inventory(chains) });
      return events.flatMap((e) => (e.kind === 'object' && e.status === 'site-has-it' ? [e.digest] : [])).sort();
    };
    // the site runs v1 (base, app1): those two are left off, app2 is carried
    const v1Chains = chainIds(v2.slice(0, 2).map((l) => l.diffId));
    expect(await leftOff(v1Chains)).toEqual([v2[0]!.digest, v2[1]!.digest].sort());
    // the site holds app1's bytes, but on another base: Docker needs it sent again, and base too
    expect(await leftOff(chainIds([v2[1]!.diffId]))).toEqual([]);
    // an inventory without chain IDs (the containerd store, or an older tarport): nothing is left off
    expect(await leftOff([])).toEqual([]);
  });

  it('a stick made with --have (without what the site had) syncs into the site\'s repository: only the new release is carried', async () => {
    const highT = new MemoryTransport('high');
    for (const [k, v] of srcT.files) highT.files.set(k, v);
    const high = new Repository(highT);
    const lowT = new MemoryTransport('low');
    const low = new Repository(lowT);
    await syncRepos(high, low, opts());
    const [, v2] = await writeDemoArchives(await tempDir(), undefined, SMALL);
    await publishArchive(high, v2!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '3' } });
    // the low side's inventory (inventory --from LOW): its objects and releases
    const lowCatalog = (await low.readCatalog())!.catalog;
    const releases = Object.fromEntries(lowCatalog.releases.map((e) => [`${e.name}:${e.tag}`, [e.digest]]));
    const have = { schema: 'tarport.inventory/v1' as const, created: '', source: 'low', diffIds: [], chainIds: [], objects: blobs(lowT).map((k) => `sha256:${k.split('/').pop()}`), releases };
    const stick = new Repository(new MemoryTransport('stick'));
    expect((await syncRepos(high, stick, { ...opts(), have })).releasesCopied).toBe(1);
    const events: SyncEvent[] = [];
    const r = await syncRepos(stick, low, opts(events));
    expect(r.releasesCopied).toBe(1);
    expect(events.filter((e) => e.kind === 'release').map((e) => e.kind === 'release' && `${e.ref} ${e.status}`).sort()).toEqual(['demo/app:1 present', 'demo/app:2 present', 'demo/app:3 copied']);
    expect((await checkRepository(low)).faults).toEqual([]);
  });

  it('a release whose tag is too long for a folder (an S3 repository can hold one) is refused before anything is copied to a directory', async () => {
    const longT = new MemoryTransport('long');
    const long = new Repository(longT);
    const [v1] = await writeDemoArchives(await tempDir(), undefined, SMALL);
    const tag = 'V'.repeat(128);
    await publishArchive(long, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag } });
    const dir = await tempDir();
    const err = await syncRepos(new Repository(longT), new Repository(new FileTransport(dir)), opts()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BAD_INPUT', message: `demo/app:${tag} cannot be carried to file://${dir}: its tag is 384 characters as a folder name (an uppercase letter, '/' or ':' takes three), more than the 255 a file system allows; leave it out with --only` });
    expect(await filesBelow(join(dir, 'blobs')).catch(() => [])).toEqual([]);
  });

  it('an object the source serves wrong (same size) stops the sync: nothing of it, no record, no catalog on DST', async () => {
    const liarT = new MemoryTransport('liar');
    for (const [k, v] of srcT.files) liarT.files.set(k, v);
    const liar = new Repository(liarT);
    const biggest = blobs(liarT).sort((a, b) => liarT.files.get(b)!.length - liarT.files.get(a)!.length)[0]!;
    const bad = Buffer.from(liarT.files.get(biggest)!);
    bad[bad.length >> 1]! ^= 0xff;
    liarT.files.set(biggest, bad);
    const dstT = new MemoryTransport('dst');
    const e = await syncRepos(liar, new Repository(dstT), opts()).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(TarportError);
    expect((e as TarportError).code).toBe('DIGEST_MISMATCH');
    expect((e as TarportError).message).toContain(`object sha256:${biggest.split('/').pop()} from ${liar.location}`);
    const left = [...dstT.files.keys()];
    // the destination took its source's identity at the start (tarport/format.json); nothing else
    expect(left.filter((k) => k === biggest || /tmp/.test(k) || (k.startsWith('tarport/') && k !== 'tarport/format.json') || k.startsWith('releases/'))).toEqual([]);
  });
});

describe('syncRepos between two directories', () => {
  it('an object damaged on DST (same size) is noticed by its digest and copied again', async () => {
    const srcDir = await tempDir();
    const dstDir = await tempDir();
    const src = await demoRepo(new FileTransport(srcDir));
    const dst = new Repository(new FileTransport(dstDir));
    await syncRepos(src, dst, opts());
    const objects = (await filesBelow(dstDir)).filter((f) => f.startsWith('blobs/'));
    const victim = join(dstDir, objects[0]!);
    const bytes = await readFile(victim);
    bytes[0]! ^= 0xff;
    await writeFile(victim, bytes);
    const events: SyncEvent[] = [];
    const r = await syncRepos(src, dst, opts(events));
    expect(r.objectsRepaired).toBe(1);
    expect(r.objectsCopied).toBe(1);
    expect((await readFile(victim)).equals(await readFile(join(srcDir, objects[0]!)))).toBe(true);
    expect((await filesBelow(dstDir)).filter((f) => /tmp/.test(f))).toEqual([]);
    expect((await checkRepository(dst)).faults).toEqual([]);
  });
});

describe('layersTheSiteHolds', () => {
  const layer = (c: string) => ({ digest: `sha256:${c.repeat(64)}`, diffId: `sha256:${c.repeat(63)}0` });
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(layer) as [ReturnType<typeof layer>, ReturnType<typeof layer>, ReturnType<typeof layer>, ReturnType<typeof layer>];
  const have = (chains: string[]) => ({ schema: 'tarport.inventory/v1' as const, created: '', source: 'site', diffIds: [], chainIds: chains, objects: [], releases: {} });

  it("a multi-platform release: each platform's layers by their own chain (the record's list is their union, no image's chain)", () => {
    const record = { layers: [a, b, c, d], index: { platforms: [{ layers: [a, b] }, { layers: [c, d] }] } };
    const plan = [{ record }] as unknown as Planned[];
    // an arm64 site holding the arm64 image (c, d)
    expect([...layersTheSiteHolds(plan, have(chainIds([c.diffId, d.diffId])))].sort()).toEqual([c.digest, d.digest].sort());
  });
});

