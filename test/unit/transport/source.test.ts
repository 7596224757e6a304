import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, expect, it, vi } from 'vitest';
import { readableFrom, sendFrom } from '../../../src/transport/source.js';
import { tempDir } from '../../helpers.js';

describe('sendFrom', () => {
  const data = randomBytes(3 * 1024 * 1024 + 99);

  /** Collects what is sent, holding each chunk a moment as a socket would, copying it before the send settles. */
  async function collect(src: Parameters<typeof sendFrom>[0], from: number, slowReadMs?: number) {
    const got: Buffer[] = [];
    let inflight = 0;
    let most = 0;
    const n = await sendFrom(
      src,
      from,
      'upload x',
      async (chunk) => {
        most = Math.max(most, ++inflight);
        const copy = Buffer.from(chunk);
        await new Promise((r) => setTimeout(r, 2));
        // the buffer must not have been refilled while this send held it
        expect(chunk.equals(copy)).toBe(true);
        got.push(copy);
        inflight--;
      },
      slowReadMs,
    );
    return { n, bytes: Buffer.concat(got), most };
  }

  it('sends a file from an offset, reads inline or (after a slow read) in the thread pool, never reusing a buffer in flight', async () => {
    const f = join(await tempDir(), 'f');
    await writeFile(f, data);
    for (const slow of [undefined, -1]) {
      const r = await collect({ file: f }, 1000, slow);
      expect(r.n).toBe(data.length - 1000);
      expect(r.bytes.equals(data.subarray(1000))).toBe(true);
      expect(r.most).toBeLessThanOrEqual(2);
    }
  });

  it('sends a stream from an offset, skipping what came before', async () => {
    const r = await collect(() => Readable.from([data.subarray(0, 500_000), data.subarray(500_000)]), 600_000);
    expect(r.bytes.equals(data.subarray(600_000))).toBe(true);
  });

  it('a file that cannot be read fails as the source, not retryable', async () => {
    await expect(sendFrom({ file: '/nonexistent/tarport-x' }, 0, 'upload y', async () => undefined)).rejects.toMatchObject({ code: 'IO', retryable: false, message: expect.stringMatching(/upload y: reading the source failed: .*tarport-x/) });
  });
});

describe('readableFrom', () => {
  it('a stream given up on (destroyed by its attempt) closes the file it reads', async () => {
    const dir = await tempDir();
    const file = join(dir, 'blob');
    await writeFile(file, randomBytes(4 << 20));
    const s = readableFrom({ file }, 0, 'upload x');
    await new Promise((r) => s.once('readable', r));
    expect(await openFdsOn(file)).toBe(1);
    s.destroy();
    await vi.waitFor(async () => expect(await openFdsOn(file)).toBe(0));
  });

  it('a source that failed before it was asked for fails the stream with its fault (a reader would wait for ever)', async () => {
    const raw = new PassThrough().on('error', () => undefined);
    raw.destroy(new Error('zstd: corrupted block'));
    await new Promise((r) => setImmediate(r));
    const s = readableFrom(() => raw, 0, 'upload blobs/x');
    const got = await Promise.race([finished(s).then(() => 'ended', (e: unknown) => e), new Promise((r) => setTimeout(() => r('still waiting after 5 s'), 5_000))]);
    expect(got).toMatchObject({ code: 'IO', retryable: false, message: 'upload blobs/x: reading the source failed: zstd: corrupted block' });
  });

  it('a source closed early without a fault fails the stream too', async () => {
    const raw = new PassThrough();
    raw.destroy();
    const s = readableFrom(() => raw, 0, 'upload blobs/x');
    await expect(finished(s)).rejects.toMatchObject({ message: 'upload blobs/x: reading the source failed: the source was closed before it was read' });
  });

  it('a stream given up on closes the stream it reads', async () => {
    const raw = Readable.from((function* () { for (;;) yield Buffer.alloc(1 << 16); })());
    const s = readableFrom(() => raw, 0, 'upload x');
    await new Promise((r) => s.once('readable', r));
    s.destroy();
    await vi.waitFor(() => expect(raw.destroyed).toBe(true));
  });
});

/** How many of this process's file descriptors are open on `path`. */
async function openFdsOn(path: string): Promise<number> {
  const { readdir, readlink } = await import('node:fs/promises');
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')) === path) n++;
  return n;
}
