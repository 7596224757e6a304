// src/consumer/fetches.ts: the downloads of one load's layers, one at a time, earliest asked-for first.
import { describe, expect, it, vi } from 'vitest';
import { Download, type ObjectCache } from '../../../src/consumer/cache.js';
import { FetchChain } from '../../../src/consumer/fetches.js';
import type { LayerDescriptor, Repository } from '../../../src/repo/index.js';

const layer = (n: number): LayerDescriptor => ({ digest: `sha256:${String(n).repeat(64)}`, size: 100 * n }) as unknown as LayerDescriptor;

/** A cache whose downloads the test ends by hand: `begun` lists them in the order they began. */
function handCache(opts: { ignoreAbort?: boolean } = {}): { cache: ObjectCache; begun: string[]; finish: (digest: string, fault?: Error) => void } {
  const ends = new Map<string, { ok: (n: number) => void; fail: (e: Error) => void; size: number }>();
  const begun: string[] = [];
  const cache = {
    follow: (d: { digest: string; size: number }) => new Download(d.size, `/nowhere/${d.digest}`),
    // a download ends when the test says, or fails when the chain's signal aborts
    ensure: (_repo: Repository, d: { digest: string; size: number }, signal?: AbortSignal) =>
      new Promise<number>((ok, fail) => {
        begun.push(d.digest);
        ends.set(d.digest, { ok, fail, size: d.size });
        if (!opts.ignoreAbort) signal?.addEventListener('abort', () => fail(signal.reason as Error), { once: true });
      }),
  } as unknown as ObjectCache;
  return {
    cache,
    begun,
    finish: (digest, fault) => {
      const e = ends.get(digest)!;
      if (fault) e.fail(fault);
      else e.ok(e.size);
    },
  };
}

/** A chain asked for two layers in archive order: the first begins, the second waits. */
function twoAsked(h: ReturnType<typeof handCache>) {
  const chain = new FetchChain({} as Repository, h.cache);
  const [a, b] = [layer(1), layer(2)];
  const db = chain.follow(b);
  const fa = chain.start(a, chain.follow(a), 0);
  const fb = chain.start(b, db, 1);
  return { chain, a, b, db, fa, fb };
}

describe('FetchChain', () => {
  it('of the fetches asked for while one runs, the earliest in the archive goes next, not the first asked', async () => {
    const h = handCache();
    const chain = new FetchChain({} as Repository, h.cache);
    const [l0, l1, l2, l3] = [0, 1, 2, 3].map((i) => layer(i + 1));
    // a puller asks for the last layer first, then the others in reverse
    const f3 = chain.start(l3!, chain.follow(l3!), 3);
    const f2 = chain.start(l2!, chain.follow(l2!), 2);
    const f0 = chain.start(l0!, chain.follow(l0!), 0);
    expect(h.begun).toEqual([l3!.digest]); // one at a time
    h.finish(l3!.digest);
    await f3;
    await vi.waitFor(() => expect(h.begun).toEqual([l3!.digest, l0!.digest]));
    const f1 = chain.start(l1!, chain.follow(l1!), 1);
    h.finish(l0!.digest);
    await f0;
    await vi.waitFor(() => expect(h.begun).toEqual([l3!.digest, l0!.digest, l1!.digest]));
    h.finish(l1!.digest);
    await f1;
    await vi.waitFor(() => expect(h.begun).toEqual([l3!.digest, l0!.digest, l1!.digest, l2!.digest]));
    h.finish(l2!.digest);
    await f2;
    expect(await chain.done).toBe(100 + 200 + 300 + 400);
  });

  it('a failed fetch fails those waiting without beginning them, ends their downloads, and is what done and stop() report', async () => {
    const h = handCache();
    const { chain, a, db, fa, fb } = twoAsked(h);
    const fault = new Error('object sha256:111… failed its digest check');
    h.finish(a.digest, fault);
    await expect(fa).rejects.toBe(fault);
    await expect(fb).rejects.toBe(fault);
    expect(h.begun).toEqual([a.digest]);
    await expect(db.readable(0)).rejects.toBe(fault);
    await expect(chain.done).rejects.toBe(fault);
    expect(await chain.stop()).toBe(fault);
  });

  it('with a gathering time, a fetch asked for while none runs waits for those asked for with it, and the earliest begins', async () => {
    const h = handCache();
    const chain = new FetchChain({} as Repository, h.cache, undefined, 200);
    const [a, b] = [layer(1), layer(2)];
    const fb = chain.start(b, chain.follow(b), 1);
    await new Promise((r) => setTimeout(r, 20));
    const fa = chain.start(a, chain.follow(a), 0);
    expect(h.begun).toEqual([]);
    await vi.waitFor(() => expect(h.begun).toEqual([a.digest]));
    h.finish(a.digest);
    await fa;
    await vi.waitFor(() => expect(h.begun).toEqual([a.digest, b.digest]));
    h.finish(b.digest);
    expect(await fb).toBe(200);
  });

  it('stop() aborts the running fetch, fails those waiting without beginning them, and reports no fault of its own', async () => {
    const h = handCache();
    const { chain, a, db, fa, fb } = twoAsked(h);
    expect(await chain.stop()).toBeUndefined();
    await expect(fa).rejects.toThrow();
    await expect(fb).rejects.toThrow();
    expect(h.begun).toEqual([a.digest]);
    await expect(db.readable(0)).rejects.toThrow();
  });

  it('after stop(), a running fetch that still succeeds (its object was cached already) begins no other', async () => {
    const h = handCache({ ignoreAbort: true });
    const chain = new FetchChain({} as Repository, h.cache);
    const [a, b] = [layer(1), layer(2)];
    const fa = chain.start(a, chain.follow(a), 0);
    const fb = chain.start(b, chain.follow(b), 1);
    const stopped = chain.stop();
    h.finish(a.digest);
    expect(await fa).toBe(100);
    await expect(fb).rejects.toThrow();
    expect(await stopped).toBeUndefined();
    expect(h.begun).toEqual([a.digest]);
  }, 10_000);

  it('a fetch asked for after a failure fails at once without beginning', async () => {
    const h = handCache();
    const chain = new FetchChain({} as Repository, h.cache);
    const [a, b] = [layer(1), layer(2)];
    const fa = chain.start(a, chain.follow(a), 0);
    const fault = new Error('the server went away');
    h.finish(a.digest, fault);
    await expect(fa).rejects.toBe(fault);
    await expect(chain.start(b, chain.follow(b), 1)).rejects.toBe(fault);
    expect(h.begun).toEqual([a.digest]);
  });

  it('counts bytes read in place with the fetched ones, and stop() of a run without faults reports none', async () => {
    const h = handCache();
    const chain = new FetchChain({} as Repository, h.cache);
    const a = layer(1);
    chain.count(5000);
    const fa = chain.start(a, chain.follow(a), 0);
    h.finish(a.digest);
    await fa;
    expect(await chain.done).toBe(5100);
    expect(await chain.stop()).toBeUndefined();
  });
});
