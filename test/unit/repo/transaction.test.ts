import { cp, mkdir, readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sha256 } from '../../../src/crypto/index.js';
import { Repository, checkRepository, collectGarbage, repairRepository, type PinnedRecord, type ReleaseRecord } from '../../../src/repo/index.js';
import { FileTransport, MemoryTransport } from '../../../src/transport/index.js';
import { tempDir } from '../../helpers.js';
import { FaultyTransport } from './faulty.js';
import { copies, faults, publish } from './fixtures.js';

const TTL = 90 * 24 * 3600 * 1000;
// no key: these tests look at where signatures go, not at who made them
const fakeSign = Object.assign(async (b: Buffer) => Buffer.from(`signature of ${sha256(b)}`), { fingerprint: 'NO KEY', verifies: async (b: Buffer, s: Buffer) => s.equals(Buffer.from(`signature of ${sha256(b)}`)) });

/** A repository holding demo/app:1 at v1, and how many changes a publish of v2 over it makes. */
const withV1 = copies(async () => {
  const base = new MemoryTransport();
  await publish(base, 0, '1');
  return base;
});

async function newestListed(t: MemoryTransport, tag: string): Promise<string | undefined> {
  return (await new Repository(t).listReleases('demo/app', tag)).at(-1)?.record;
}

async function catalogRecord(t: MemoryTransport, tag: string): Promise<string | undefined> {
  return (await new Repository(t).readCatalog())?.catalog.releases.find((e) => e.tag === tag)?.record;
}

describe('write transaction under faults', () => {
  it('a publish killed at each of its changes: check names only catalog lag, repair and the next publish leave it clean', async () => {
    const probe = new FaultyTransport(await withV1());
    await publish(probe, 1, '1');
    const changes = probe.mutations;
    expect(changes).toBeGreaterThan(8);
    let failed = 0;
    for (let n = 1; n <= changes; n++) {
      const base = await withV1();
      const f = new FaultyTransport(base);
      f.failAt = n;
      // the last change withdraws the intent: a failure there is not the publish's
      await publish(f, 1, '1').then(() => undefined, () => failed++);
      // nothing broken: what the catalog names reads, and every object of every record is there
      const before = await faults(base);
      expect(before.filter((x) => !x.includes("run 'tarport repair'")), `killed at change ${n}`).toEqual([]);
      await repairRepository(new Repository(base), { ttlMs: TTL });
      expect(await faults(base), `after repair, killed at change ${n}`).toEqual([]);
      expect(await catalogRecord(base, '1')).toBe(await newestListed(base, '1'));
      await publish(base, 1, '1');
      expect(await faults(base), `after the next publish, killed at change ${n}`).toEqual([]);
      const cat = (await new Repository(base).readCatalog())!.catalog;
      expect(cat.releases.find((e) => e.tag === '1')!.version).toBe(2);
    }
    expect(failed).toBe(changes - 1);
    console.log(`publish killed at each of its ${changes} changes: 0 lost, 0 hidden after repair, 0 broken`);
  }, 120_000);

  it('a publish killed between its catalog and its derived files: the next publish of the same content (unchanged) brings index.json, the registry view and the page up to the catalog', async () => {
    const probe = new FaultyTransport(await withV1());
    await publish(probe, 1, '1');
    const base = await withV1();
    const f = new FaultyTransport(base);
    // the change after catalog.json's rename: the first of the derived files
    f.failAt = probe.log.findIndex((c) => c.endsWith(' tarport/catalog.json')) + 2;
    await expect(publish(f, 1, '1')).rejects.toMatchObject({ code: 'IO' });
    const shown = () => {
      const catalog = JSON.parse(base.files.get('tarport/catalog.json')!.toString()) as { sequence: number; releases: { manifest: { digest: string } }[] };
      const digest = catalog.releases[0]!.manifest.digest;
      return [
        (JSON.parse(base.files.get('index.json')!.toString()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest).includes(digest),
        Object.values((JSON.parse(base.files.get('tarport/registry/view.json')!.toString()) as { tags: Record<string, { digest: string }> }).tags).map((t) => t.digest).includes(digest),
        base.files.get('index.html')!.toString().includes(`catalog sequence ${catalog.sequence},`),
      ];
    };
    expect(shown()).toEqual([false, false, false]);
    await publish(base, 1, '1'); // the same archive: its release is unchanged, the catalog too
    expect((await new Repository(base).readCatalog())!.catalog.releases[0]!.version).toBe(2);
    expect(shown()).toEqual([true, true, true]);
  });

  it('a publish of the same content over derived files that show the catalog writes none of them again', async () => {
    const base = await withV1();
    const f = new FaultyTransport(base);
    await publish(f, 0, '1'); // the release withV1 holds: unchanged
    expect(f.log.filter((c) => / (index\.json|index\.html|tarport\/registry\/view\.json)$/.test(c))).toEqual([]);
  });

  it('a failed write (the process goes on) at each change: the next publish alone makes check clean', async () => {
    const probe = new FaultyTransport(await withV1());
    await publish(probe, 1, '1');
    for (let n = 1; n <= probe.mutations; n++) {
      const base = await withV1();
      const f = new FaultyTransport(base);
      f.failAt = n;
      f.once = true;
      await publish(f, 1, '1').catch(() => undefined);
      await publish(base, 1, '1');
      expect(await faults(base), `write ${n} failed`).toEqual([]);
      expect(await catalogRecord(base, '1')).toBe(await newestListed(base, '1'));
    }
  }, 120_000);

  it('delete-then-rename killed between the two steps: readers still find a catalog; repair puts catalog.json back', async () => {
    const probe = new FaultyTransport(await withV1(), 0, false);
    await publish(probe, 1, '2');
    let sawGap = 0;
    for (let n = 1; n <= probe.mutations; n++) {
      const base = await withV1();
      const f = new FaultyTransport(base, 0, false);
      f.failAt = n;
      await publish(f, 1, '2').catch(() => undefined);
      if (!base.files.has('tarport/catalog.json')) sawGap++;
      expect(await new Repository(base).readCatalog(), `killed at change ${n}`).toBeDefined();
      await repairRepository(new Repository(base), { ttlMs: TTL });
      expect(base.files.has('tarport/catalog.json')).toBe(true);
      expect(await faults(base)).toEqual([]);
    }
    expect(sawGap).toBeGreaterThan(0);
  }, 120_000);

  it('a signed catalog is never found beside the signature of another catalog, at any kill point', async () => {
    const probe = new FaultyTransport(await withV1(), 0, false);
    const { publishArchive, DEFAULT_CATALOG_TTL_MS } = await import('../../../src/producer/index.js');
    const { demoArchives } = await import('./fixtures.js');
    const [, v2] = await demoArchives();
    const signedPush = (t: FaultyTransport) => publishArchive(new Repository(t), v2!, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' }, sign: fakeSign });
    await signedPush(probe);
    for (let n = 1; n <= probe.mutations; n++) {
      const base = await withV1();
      const f = new FaultyTransport(base, 0, false);
      f.failAt = n;
      await signedPush(f).catch(() => undefined);
      const repo = new Repository(base);
      const got = (await repo.readCatalog())!;
      const sig = await repo.readCatalogSignature(got);
      // the unsigned first catalog still current, or a signed one with its own signature
      const expected = got.catalog.sequence === 1 ? undefined : `signature of ${sha256(got.bytes)}`;
      expect(sig?.toString(), `killed at change ${n}`).toBe(expected);
    }
  }, 120_000);
});

describe('racing publishes', () => {
  it('8 producers of 8 tags at once: every tag is in the catalog when they end (3 trials)', async () => {
    for (let trial = 0; trial < 3; trial++) {
      const base = new MemoryTransport();
      const tags = Array.from({ length: 8 }, (_, i) => `t${i}`);
      await Promise.all(tags.map((tag, i) => publish(new FaultyTransport(base, 4), (i % 2) as 0 | 1, tag)));
      const cat = (await new Repository(base).readCatalog())!.catalog;
      expect(cat.releases.map((e) => e.tag).sort(), `trial ${trial}`).toEqual(tags);
      expect(await faults(base)).toEqual([]);
    }
  }, 120_000);

  it('re-pushing identical content repairs a catalog left behind (no hidden release)', async () => {
    const probe = new FaultyTransport(await withV1());
    await publish(probe, 1, '1');
    // killed right after the record was renamed into place: releases/ has v2, the catalog v1
    const record = probe.log.findIndex((l) => /^rename \S+ tarport\/releases\/\S+\.json$/.test(l));
    expect(record).toBeGreaterThan(0);
    const base = await withV1();
    const f = new FaultyTransport(base);
    f.failAt = record + 2;
    await expect(publish(f, 1, '1')).rejects.toThrow(/injected fault/);
    expect((await new Repository(base).readCatalog())!.catalog.releases[0]!.version).toBe(1);
    expect((await faults(base)).some((x) => x.includes('releases/ holds the newer v2'))).toBe(true);
    await publish(base, 1, '1'); // identical content: "unchanged", and the catalog catches up
    expect(await catalogRecord(base, '1')).toBe(await newestListed(base, '1'));
    expect((await new Repository(base).readCatalog())!.catalog.releases[0]!.version).toBe(2);
    expect(await faults(base)).toEqual([]);
  }, 60_000);
});

describe('beginning a write', () => {
  it('reads the format file once in a repository that has its identity', async () => {
    const base = await withV1();
    const reads: string[] = [];
    const read = base.read.bind(base);
    base.read = (key, o) => (reads.push(key), read(key, o));
    const readTo = base.readTo.bind(base);
    base.readTo = (key, sink, o) => (reads.push(key), readTo(key, sink, o));
    const tx = await new Repository(base).begin();
    await tx.end();
    expect(reads.filter((k) => k === 'tarport/format.json')).toHaveLength(1);
  });

  it('check while a publish is under way (its intent holds): a catalog lag is looked at again until its catalog comes; one that stays is a fault', async () => {
    const probe = new FaultyTransport(await withV1());
    await publish(probe, 1, '1');
    const record = probe.log.findIndex((l) => /^rename \S+ tarport\/releases\/\S+\.json$/.test(l));
    const base = await withV1();
    const f = new FaultyTransport(base);
    f.failAt = record + 2;
    await expect(publish(f, 1, '1')).rejects.toThrow(/injected fault/);
    const now = Date.now();
    const intent = { schema: 'tarport.intent/v1', created: new Date(now).toISOString(), expires: new Date(now + 600_000).toISOString(), objects: [] };
    base.files.set('tarport/pending/intent-0123456789abcdef.json', Buffer.from(JSON.stringify(intent)));
    // the publish writes its catalog while check looks (at its first look again)
    const list = base.list.bind(base);
    let looks = 0;
    let landing: Promise<unknown> | undefined;
    base.list = (folder) => {
      if (folder === 'tarport/pending' && ++looks === 2) landing = publish(base, 1, '1');
      return list(folder);
    };
    const during = await checkRepository(new Repository(base), { lagWaitMs: 10_000 });
    await landing;
    expect(looks).toBeGreaterThanOrEqual(2);
    expect(during.faults).toEqual([]);
    base.list = list;
    // a lag that stays (a publish killed; its intent holds 30 minutes) is a fault once the wait ends
    const killed = await withV1();
    const k = new FaultyTransport(killed);
    k.failAt = record + 2;
    await expect(publish(k, 1, '1')).rejects.toThrow(/injected fault/);
    killed.files.set('tarport/pending/intent-0123456789abcdef.json', Buffer.from(JSON.stringify(intent)));
    const started = Date.now();
    const after = await checkRepository(new Repository(killed), { lagWaitMs: 1500 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(after.faults.map((x) => x.problem)).toContainEqual(expect.stringMatching(/^the catalog names v1, releases\/ holds the newer v2/));
  });

  it('check while a gc removes a release: an object that release shares with one still there, and that is gone, is a fault', async () => {
    const base = new MemoryTransport();
    await publish(base, 0, '1');
    await publish(base, 1, '2'); // v2 of the demo shares v1's layers, under another tag
    const repo = new Repository(base);
    const first = (await repo.listReleases('demo/app', '1'))[0]!;
    const v1 = (await repo.readRecord(first)).record;
    const shared = `blobs/sha256/${v1.layers[0]!.digest.slice(7)}`;
    const readTo = base.readTo.bind(base);
    let gone = false;
    base.readTo = async (key, sink, o) => {
      if (!gone && key.startsWith('blobs/')) {
        gone = true;
        base.files.delete(`tarport/releases/demo%2Fapp/1/${first.record}`); // gc took demo/app:1
        base.files.delete(shared); // and the layer is lost, though demo/app:2 names it
      }
      return readTo(key, sink, o);
    };
    const r = await checkRepository(repo, { lagWaitMs: 0 });
    expect(gone).toBe(true);
    expect(r.faults.map((f) => f.what)).toContainEqual(expect.stringMatching(new RegExp(`^object ${v1.layers[0]!.digest} \\(named by `)));
  });

  it('check while a gc removes a release: an object gone with its record is no fault', async () => {
    const base = await withV1();
    const repo = new Repository(base);
    const rec = [...base.files.keys()].find((k) => k.startsWith('tarport/releases/') && k.endsWith('.json'))!;
    const layer = [...base.files.keys()].filter((k) => k.startsWith('blobs/sha256/')).sort((a, b) => base.files.get(b)!.length - base.files.get(a)!.length)[0]!;
    // the gc takes the record, then the object, while check reads the objects
    const readTo = base.readTo.bind(base);
    let gcRan = false;
    base.readTo = async (key, sink, o) => {
      if (!gcRan && key.startsWith('blobs/')) {
        gcRan = true;
        base.files.delete(rec);
        base.files.delete(layer);
      }
      return readTo(key, sink, o);
    };
    const r = await checkRepository(repo);
    expect(gcRan).toBe(true);
    expect(r.faults.filter((x) => x.what.startsWith('object '))).toEqual([]);
    // the same object gone while its record stays is a fault
    base.readTo = readTo;
    base.files.delete(layer);
    const rest = await withV1();
    for (const [k, v] of rest.files) if (!base.files.has(k) && k !== layer) base.files.set(k, v);
    expect((await checkRepository(repo)).faults.map((x) => x.what)).toContainEqual(expect.stringMatching(new RegExp(`^object sha256:${layer.slice('blobs/sha256/'.length)} \\(named by `)));
  });

  it('creating: the identity is written with the first object copied (putObject, putSplit), so a sync cut there is found again without --init', async () => {
    for (const put of ['putObject', 'putSplit'] as const) {
      const t = new MemoryTransport();
      const tx = await new Repository(t).begin({ create: true });
      const bytes = Buffer.from(`one object, copied by ${put}`);
      const digest = sha256(bytes);
      // copied at once, as a sync copies objects side by side: one identity, written once
      const copies = [0, 1].map(() => (put === 'putObject' ? tx.putObject(digest, { stream: () => Readable.from([bytes]) }) : tx.putSplit({ digest, size: bytes.length }, async () => Readable.from([bytes]), 8)));
      await Promise.all(copies);
      // the run is cut here: no end, no record, no catalog
      const format = JSON.parse(t.files.get('tarport/format.json')?.toString() ?? '{}') as { id?: string };
      expect([put, format.id]).toEqual([put, tx.repositoryId]);
      const again = await new Repository(t).begin();
      expect(again.repositoryId).toBe(tx.repositoryId);
      await again.end();
    }
    // a first copy that fails keeps nothing, and so writes no identity either
    const t = new MemoryTransport();
    const tx = await new Repository(t).begin({ create: true });
    const broken = () => new Readable({ read() { this.destroy(new Error('the source broke off')); } });
    await expect(tx.putObject(`sha256:${'a'.repeat(64)}`, { stream: broken })).rejects.toThrow('the source broke off');
    await tx.end();
    expect([...t.files.keys()]).toEqual([]);
  });
});

describe('an unsigned catalog over a signed one', () => {
  it('the writer is told (publish: a warning in its result), once: an unsigned write over an unsigned catalog, or a signed one, says nothing', async () => {
    const { publishArchive, DEFAULT_CATALOG_TTL_MS } = await import('../../../src/producer/index.js');
    const { demoArchives } = await import('./fixtures.js');
    const [v1, v2] = await demoArchives();
    const t = new MemoryTransport('signed');
    const push = (archive: string, tag: string, sign?: typeof fakeSign) => publishArchive(new Repository(t), archive, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag }, ...(sign ? { sign } : {}) });
    expect((await push(v1!, '1')).warnings).toBeUndefined();
    expect((await push(v1!, '2', fakeSign)).warnings).toBeUndefined();
    expect((await push(v2!, '3')).warnings).toEqual([
      'the catalog of memory://signed was signed, and this write replaced it with an unsigned one: consumers that pin keys (--trust) now refuse every release in it; write again with --sign-key',
    ]);
    expect((await push(v2!, '4')).warnings).toBeUndefined();
  });

  it('a sync that copies an unsigned catalog over a signed one (a stick the other side wrote to, synced back) warns', async () => {
    const { publishArchive, DEFAULT_CATALOG_TTL_MS } = await import('../../../src/producer/index.js');
    const { syncRepos } = await import('../../../src/sync/sync.js');
    const { demoArchives } = await import('./fixtures.js');
    const [v1, v2] = await demoArchives();
    const [high, stick] = [new MemoryTransport('high'), new MemoryTransport('stick')];
    await publishArchive(new Repository(high), v1!, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' }, sign: fakeSign });
    const warnings = async (src: MemoryTransport, dst: MemoryTransport) => {
      const said: string[] = [];
      await syncRepos(new Repository(src), new Repository(dst), { create: true, catalogTtlMs: TTL, onEvent: (e) => void (e.kind === 'warning' && said.push(e.message)) });
      return said;
    };
    expect(await warnings(high, stick)).toEqual([]);
    // the low side pushes to the stick, unsigned; the stick goes back to the high side
    await publishArchive(new Repository(stick), v2!, { compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    expect(await warnings(stick, high)).toEqual([
      'the catalog of memory://high was signed, and this write replaced it with an unsigned one: consumers that pin keys (--trust) now refuse every release in it; write again with --sign-key',
    ]);
  });
});

describe('a write whose folder is swapped under it', () => {
  it('a stick unmounted mid-write: the rest does not go to its empty mount point, and the next write is refused there', async () => {
    const base = await tempDir();
    const root = join(base, 'stick');
    await new Repository(new FileTransport(root)).init();
    const repo = new Repository(new FileTransport(root));
    const tx = await repo.begin();
    const bytes = Buffer.from('an object copied after the stick went');
    await rename(root, join(base, 'unplugged'));
    await mkdir(root); // the mount point left behind, on the host's disk
    await expect(tx.putObject(sha256(bytes), { stream: () => Readable.from([bytes]) })).rejects.toMatchObject({ code: 'IO', retryable: false });
    await tx.end();
    expect(await readdir(root)).toEqual([]);
    // the next write begins afresh: the empty folder holds no repository
    await expect(repo.begin()).rejects.toMatchObject({ code: 'NO_REPOSITORY' });
  });

  it('another stick of the same repository mounted in its place (the same folder identity, as FAT roots have): its write intent is not there, so nothing more is written', async () => {
    const base = await tempDir();
    const root = join(base, 'stick');
    await new Repository(new FileTransport(root)).init();
    await cp(root, join(base, 'other'), { recursive: true }); // the second stick: a copy made earlier
    const repo = new Repository(new FileTransport(root));
    const tx = await repo.begin();
    expect(await readdir(join(root, 'tarport', 'pending'))).toEqual([expect.stringMatching(/^intent-[0-9a-f]+\.json$/)]);
    // the first stick leaves and the other takes its place under the same folder (device and inode unchanged)
    for (const f of await readdir(root)) await rename(join(root, f), join(base, `first-${f}`));
    for (const f of await readdir(join(base, 'other'))) await rename(join(base, 'other', f), join(root, f));
    const bytes = Buffer.from('an object copied after the sticks were swapped');
    await expect(tx.putObject(sha256(bytes), { stream: () => Readable.from([bytes]) })).rejects.toMatchObject({
      code: 'IO',
      retryable: false,
      // the first write refused is the intent's own update, naming the object
      message: expect.stringMatching(/^write tarport\/pending\/\.tarport-[0-9a-f]+\.tmp in file:\/\/.+: the repository folder no longer holds tarport\/pending\/intent-[0-9a-f]+\.json, which this write put there when it began \(another stick mounted in its place\?\); nothing more is written there: run again once the stick is back$/),
    });
    await tx.end();
    expect(await readdir(join(root, 'tarport'))).toEqual(['format.json']);
  });
});

describe('a location that holds no repository', () => {
  // a stick that is not mounted lists as an empty folder: check and gc must not call it clean
  it.each(['check', 'gc', 'repair'] as const)('%s refuses it (NOT_FOUND), naming the location', async (what) => {
    const repo = new Repository(new MemoryTransport('stick'));
    const run = { check: () => checkRepository(repo), gc: () => collectGarbage(repo, { keep: 1, dryRun: false, graceMs: 0 }), repair: () => repairRepository(repo, { ttlMs: 60_000 }) }[what];
    await expect(run()).rejects.toMatchObject({ code: 'NOT_FOUND', message: `${what} memory://stick: it holds no tarport repository (no tarport/format.json, no catalog, no releases): a typo, a stick or mount that is not there, or nothing was pushed yet` });
  });

  it('an initialised repository with nothing in it yet is checked and collected as empty', async () => {
    const repo = new Repository(new MemoryTransport());
    await repo.init();
    expect((await checkRepository(repo)).faults).toEqual([]);
    expect((await collectGarbage(repo, { keep: 1, dryRun: false, graceMs: 0 })).objectsRemoved).toEqual([]);
  });
});

describe('verified types', () => {
  it('only the verifying reader makes a PinnedRecord', async () => {
    const base = await withV1();
    const repo = new Repository(base);
    const e = (await repo.readCatalog())!.catalog.releases[0]!;
    const pinned: PinnedRecord = await repo.readRecord(e, { digest: e.digest, size: e.size });
    expect(pinned.pinned).toBe(true);
    const fake = { ref: e, record: {} as ReleaseRecord, bytes: Buffer.alloc(0), digest: e.digest, pinned: true as const };
    // @ts-expect-error an object that did not come from readRecord is not a PinnedRecord
    const refused: PinnedRecord = fake;
    expect(refused.pinned).toBe(true);
  });
});
