import { describe, expect, it } from 'vitest';
import { Repository, collectGarbage } from '../../../src/repo/index.js';
import { TarportError } from '../../../src/errors.js';
import { MemoryTransport, type ReadOptions } from '../../../src/transport/index.js';
import { FaultyTransport } from './faulty.js';
import { copies, faults, publish } from './fixtures.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** demo/app:a at v1 (image X) and v2 (image Y): gc --keep 1 would delete X's own objects. */
const repoWithGarbage = copies(async () => {
  const base = new MemoryTransport();
  await publish(base, 0, 'a');
  await publish(base, 1, 'a');
  return base;
});

// remote-like (no local writes: a blob the server holds is not sent again), every file old
const remote = (t: MemoryTransport) => new FaultyTransport(t, 2, true, false);

describe('gc', () => {
  it('removes old releases, unreferenced objects and stale temporary files, and leaves the repository clean', async () => {
    const base = await repoWithGarbage();
    base.files.set('blobs/sha256/.tarport-0011223344556677.tmp', Buffer.from('left over'));
    const r = await collectGarbage(new Repository(remote(base)), { keep: 1, dryRun: false, graceMs: 0 });
    expect(r.releasesRemoved).toEqual(['demo/app:a v1']);
    expect(r.objectsRemoved.length).toBeGreaterThan(0);
    expect(r.temporaryRemoved).toEqual(['blobs/sha256/.tarport-0011223344556677.tmp']);
    expect(await faults(base)).toEqual([]);
  });

  it('a kept record that is damaged: every release of its tag stays (the older ones may be all that loads), said, and the other tags are swept', async () => {
    const base = await repoWithGarbage();
    await publish(base, 0, 'b');
    await publish(base, 1, 'b');
    const records = (tag: string) => [...base.files.keys()].filter((k) => k.startsWith(`tarport/releases/demo%2Fapp/${tag}/`) && k.endsWith('.json')).sort();
    const [, newest] = records('a');
    const blobsBefore = [...base.files.keys()].filter((k) => k.startsWith('blobs/')).sort();
    const bytes = Buffer.from(base.files.get(newest!)!);
    bytes[20] = bytes[20]! ^ 1;
    base.files.set(newest!, bytes);
    const r = await collectGarbage(new Repository(remote(base)), { keep: 1, dryRun: false, graceMs: 0 });
    expect(records('a')).toHaveLength(2);
    expect(r.releasesRemoved).toEqual(['demo/app:b v1']);
    expect(r.tagsKept).toEqual([expect.stringMatching(/^demo\/app:a: every release kept, and no object collected, since v2 \(00000002-[0-9a-f]{16}\.json\) does not read: .+; run 'tarport check'$/)]);
    // no object goes, those the damaged record names (unknown to gc) among them
    expect(r.objectsRemoved).toEqual([]);
    expect([...base.files.keys()].filter((k) => k.startsWith('blobs/')).sort()).toEqual(blobsBefore);
  });

  it('spares what a publish under way announced, whatever its age', async () => {
    const base = await repoWithGarbage();
    const repo = new Repository(remote(base));
    const tx = await repo.begin();
    const doomed = (await collectGarbage(new Repository(remote(base)), { keep: 1, dryRun: true, graceMs: 0 })).objectsRemoved;
    expect(doomed.length).toBeGreaterThan(0);
    await tx.protect(doomed);
    const r = await collectGarbage(new Repository(remote(base)), { keep: 1, dryRun: false, graceMs: 0 });
    expect(r.objectsRemoved).toEqual([]);
    expect(r.objectsSpared.sort()).toEqual([...doomed].sort());
    await tx.end();
    const after = await collectGarbage(new Repository(remote(base)), { keep: 1, dryRun: false, graceMs: 0 });
    expect(after.objectsRemoved.sort()).toEqual([...doomed].sort());
  });

  it('raced against a publish that reuses the objects it is deleting, at 36 offsets: 0 broken releases', async () => {
    // The trials are independent (a repository each), so they run BATCH at a time: most of a
    // trial is the transport's injected delays, which overlap. How long a publish of tag b takes,
    // to spread gc's start over it, is measured the same way: BATCH publishes at once.
    const BATCH = 6;
    const t0 = Date.now();
    await Promise.all(Array.from({ length: BATCH }, async () => publish(remote(await repoWithGarbage()), 0, 'b')));
    const span = Math.max(36, (Date.now() - t0) * 1.2);
    let broken = 0;
    let failed = 0;
    const trial = async (k: number) => {
      const base = await repoWithGarbage();
      const pushing = publish(remote(base), 0, 'b').catch(() => failed++);
      const collecting = sleep((k * span) / 36).then(() => collectGarbage(new Repository(remote(base)), { keep: 1, dryRun: false, graceMs: 0 }));
      await Promise.all([pushing, collecting]);
      const f = await faults(base);
      if (f.length > 0) broken++;
      expect(f, `gc started ${Math.round((k * span) / 36)} ms into the publish`).toEqual([]);
    };
    for (let k = 0; k < 36; k += BATCH) await Promise.all(Array.from({ length: BATCH }, (_, i) => trial(k + i)));
    console.log(`gc/publish race: 36 offsets over ${Math.round(span)} ms, ${broken} broken, ${failed} publishes failed`);
    expect(broken).toBe(0);
    expect(failed).toBe(0);
  }, 300_000);

  it('a record published meanwhile that cannot be read (a dropped link) stops the sweep: the objects it may name stay', async () => {
    const base = await repoWithGarbage();
    await publish(base, 0, 'b'); // names the objects gc --keep 1 would take from demo/app:a v1
    const tags = 'tarport/releases/demo%2Fapp';
    let listings = 0;
    const cut = new TarportError('CONNECTION', 'read tarport/releases/demo%2Fapp/b/…: the connection was lost', { retryable: true });
    // demo/app:b comes only after gc planned (published meanwhile), and its record does not read
    const t = Object.assign(Object.create(base) as MemoryTransport, {
      async *list(folder: string) {
        const first = folder === tags && listings++ === 0;
        for await (const e of base.list(folder)) if (!(first && e.name === 'b')) yield e;
      },
      async read(key: string, opts?: ReadOptions) {
        if (key.startsWith(`${tags}/b/`)) throw cut;
        return base.read(key, opts);
      },
    });
    await expect(collectGarbage(new Repository(t), { keep: 1, dryRun: false, graceMs: 0 })).rejects.toBe(cut);
    expect(await faults(base)).toEqual([]);
  });
});
