import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { resumableInto, resumableWrite, sinkStream } from '../../../src/transport/resume.js';

const data = randomBytes(100_000);
const opts = { offset: 0, retries: 3, what: 'read x', retryable: () => true };

/** An attempt that delivers from `offset` in 10,000-byte chunks and breaks after `cutAfter` bytes of this attempt. */
function flaky(cuts: number[]) {
  const offsets: number[] = [];
  let n = 0;
  const attempt = async (offset: number, sink: (c: Buffer) => void | Promise<void>) => {
    offsets.push(offset);
    const cut = cuts[n++];
    for (let at = offset, sent = 0; at < data.length; at += 10_000) {
      if (cut !== undefined && sent >= cut) throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
      const chunk = data.subarray(at, Math.min(data.length, at + 10_000));
      await sink(chunk);
      sent += chunk.length;
    }
  };
  return { attempt, offsets };
}

describe('resumableInto', () => {
  it('resumes each attempt at the byte the sink took last, and delivers every byte once', async () => {
    const { attempt, offsets } = flaky([30_000, 20_000]);
    const got: Buffer[] = [];
    const resumes: number[] = [];
    const n = await resumableInto(attempt, (c) => void got.push(Buffer.from(c)), { ...opts, onResume: (at) => resumes.push(at) });
    expect(n).toBe(data.length);
    expect(Buffer.concat(got).equals(data)).toBe(true);
    expect(offsets).toEqual([0, 30_000, 50_000]);
    expect(resumes).toEqual([30_000, 50_000]);
  });

  it('an attempt that breaks while the sink still has a chunk: the next one waits for the sink and starts after that chunk', async () => {
    const offsets: number[] = [];
    let busy = false;
    let overlapped = false;
    const got: Buffer[] = [];
    const sink = async (c: Buffer) => {
      if (busy) overlapped = true;
      busy = true;
      got.push(Buffer.from(c));
      await new Promise((r) => setTimeout(r, 30));
      busy = false;
    };
    await resumableInto(
      async (offset, deliver) => {
        offsets.push(offset);
        if (offsets.length === 1) {
          void deliver(data.subarray(0, 40_000)); // handed over, as a socket event does, not awaited
          throw new Error('connection reset');
        }
        await deliver(data.subarray(offset));
      },
      sink,
      opts,
    );
    expect(offsets).toEqual([0, 40_000]);
    expect(overlapped).toBe(false);
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });

  it('gives up after its retries with the error, named', async () => {
    const { attempt, offsets } = flaky([10_000, 10_000, 10_000, 10_000, 10_000]);
    await expect(resumableInto(attempt, () => undefined, opts)).rejects.toMatchObject({ code: 'CONNECTION', message: expect.stringMatching(/read x: connection reset/) });
    expect(offsets).toHaveLength(4); // the first try and three retries
  });

  it('an attempt that moved a mebibyte before it broke does not count against the retries: a long download cut now and then goes on', async () => {
    const big = randomBytes(3 * (1 << 20) + 500_000);
    const offsets: number[] = [];
    const attempt = async (offset: number, sink: (c: Buffer) => void | Promise<void>) => {
      offsets.push(offset);
      // each answer carries 1.2 MiB at most, as a cache that serves ranges in parts
      const end = Math.min(big.length, offset + 1_200_000);
      for (let at = offset; at < end; at += 100_000) await sink(big.subarray(at, Math.min(end, at + 100_000)));
      if (end < big.length) throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
    };
    const got: Buffer[] = [];
    expect(await resumableInto(attempt, (c) => void got.push(Buffer.from(c)), { ...opts, retries: 1 })).toBe(big.length);
    expect(offsets).toEqual([0, 1_200_000, 2_400_000, 3_600_000]);
    expect(Buffer.concat(got).equals(big)).toBe(true);
  });

  it('a failing sink ends the download at once: no retry, its own error', async () => {
    const { attempt, offsets } = flaky([]);
    let calls = 0;
    const sinkError = new Error('no space left for the cache');
    await expect(
      resumableInto(
        attempt,
        async () => {
          if (++calls === 3) throw sinkError;
        },
        opts,
      ),
    ).rejects.toBe(sinkError);
    expect(offsets).toEqual([0]);
    expect(calls).toBe(3);
  });

  it('an error that is not retryable is not retried', async () => {
    const { attempt, offsets } = flaky([10_000]);
    await expect(resumableInto(attempt, () => undefined, { ...opts, retryable: () => false })).rejects.toThrow(/connection reset/);
    expect(offsets).toEqual([0]);
  });
});

describe('sinkStream', () => {
  it('streams what the run delivers, holds the run back while nobody reads, and aborts it when destroyed', async () => {
    let delivered = 0;
    let aborted = false;
    const s = sinkStream(async (sink, signal) => {
      signal.addEventListener('abort', () => (aborted = true));
      for (let i = 0; i < 100 && !signal.aborted; i++) {
        await sink(Buffer.alloc(256 * 1024, i));
        delivered++;
      }
    }, 'read y');
    await new Promise((r) => setTimeout(r, 50));
    // nobody read: the stream holds about its high-water mark (1 MiB), not all 25 MiB
    expect(delivered).toBeLessThan(10);
    const first = (await s[Symbol.asyncIterator]().next()).value as Buffer;
    expect(first[0]).toBe(0);
    s.destroy();
    await new Promise((r) => setTimeout(r, 20));
    expect(aborted).toBe(true);
    expect(delivered).toBeLessThan(20);
  });

  it('fails the stream with the run’s error, as a TarportError naming the read', async () => {
    const s = sinkStream(async () => {
      throw new Error('550 gone');
    }, 'read z');
    const err = await new Promise<unknown>((r) => s.on('error', r).resume());
    expect(err).toBeInstanceOf(TarportError);
    expect((err as Error).message).toMatch(/read z: 550 gone/);
  });
});

describe('resumableWrite', () => {
  /** A server that holds what the attempts wrote; each attempt in `lost` sends all, then loses the confirmation. */
  function server(total: number, lost: number, heldAfterLoss = total) {
    const offsets: number[] = [];
    let held: number | undefined;
    const upload = async (offset: number, sourceEnded: (n: number) => void) => {
      offsets.push(offset);
      held = total;
      sourceEnded(total);
      if (offsets.length <= lost) {
        held = heldAfterLoss;
        throw Object.assign(new Error('no reply within the idle timeout'), { code: 'ETIMEDOUT' });
      }
      return total - offset;
    };
    return { upload, offsets, remoteSize: async () => held };
  }
  const base = { retries: 3, what: 'upload x', retryable: () => true, cleanup: async () => undefined };

  it('an attempt that sent every byte and lost only the confirmation is not sent again', async () => {
    const s = server(100_000, 1);
    const resumes: number[] = [];
    const r = await resumableWrite({ ...base, upload: s.upload, remoteSize: s.remoteSize, onResume: (at) => resumes.push(at) });
    expect(r).toEqual({ size: 100_000 });
    expect(s.offsets).toEqual([0]);
    expect(resumes).toEqual([100_000]);
  });

  it('a server that holds less than the source sent gets the rest', async () => {
    const s = server(100_000, 1, 60_000);
    const r = await resumableWrite({ ...base, upload: s.upload, remoteSize: s.remoteSize });
    expect(r).toEqual({ size: 100_000 });
    expect(s.offsets).toEqual([0, 60_000]);
  });

  it('an empty source whose file the server does not hold is sent again', async () => {
    let held: number | undefined;
    const offsets: number[] = [];
    const upload = async (offset: number, sourceEnded: (n: number) => void) => {
      offsets.push(offset);
      sourceEnded(0);
      if (offsets.length === 1) throw new Error('cut before the file was made');
      held = 0;
      return 0;
    };
    const r = await resumableWrite({ ...base, upload, remoteSize: async () => held });
    expect(r).toEqual({ size: 0 });
    expect(offsets).toEqual([0, 0]);
  });
});
