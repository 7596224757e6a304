import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { feedFile } from '../../../src/archive/filefeed.js';
import { giveBack } from '../../../src/lending.js';

const dir = mkdtempSync(join(tmpdir(), 'tarport-feed-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const data = randomBytes(100_000);
const file = join(dir, 'data');
writeFileSync(file, data);

/**
 * A consumer that holds each chunk for a while before it calls back (as a decompressor that is
 * behind does) and checks, when it calls back, that the chunk still holds the bytes it got: a
 * reader that reused a buffer before the callback would have overwritten it by then.
 */
function holdingSink(delayMs: number) {
  const got: Buffer[] = [];
  const changed: number[] = [];
  const sink = new Writable({
    highWaterMark: 1,
    write(c: Buffer, _e, cb) {
      const copy = Buffer.from(c);
      got.push(copy);
      setTimeout(() => {
        if (!c.equals(copy)) changed.push(got.length - 1);
        cb();
      }, delayMs);
    },
  });
  // in tarport a pipeline listens; here the error is read from sink.errored
  sink.on('error', () => undefined);
  return { sink, got, changed };
}

describe('feedFile', () => {
  it('feeds the whole file in order through a ring of reused buffers, each reused only after its callback', async () => {
    const { sink, got, changed } = holdingSink(2);
    const ended = new Promise((r) => sink.on('finish', r));
    expect(await feedFile(file, sink, { chunk: 4096 })).toBe(data.length);
    await ended;
    expect(changed).toEqual([]);
    expect(got.length).toBe(Math.ceil(data.length / 4096));
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });

  it('a consumer that transfers a chunk to another thread leaves no detached buffer behind', async () => {
    const got: Buffer[] = [];
    const { port1, port2 } = new MessageChannel();
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        got.push(Buffer.from(c));
        // as ThreadedZstd moves a chunk that owns its whole memory
        if (c.byteOffset === 0 && c.byteLength === c.buffer.byteLength) port1.postMessage(c, [c.buffer as ArrayBuffer]);
        cb();
      },
    });
    try {
      expect(await feedFile(file, sink, { chunk: 4096 })).toBe(data.length);
    } finally {
      port1.close();
      port2.close();
    }
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });

  it('feeds a range', async () => {
    const { sink, got } = holdingSink(0);
    expect(await feedFile(file, sink, { start: 1000, length: 20_000, chunk: 3000 })).toBe(20_000);
    expect(Buffer.concat(got).equals(data.subarray(1000, 21_000))).toBe(true);
  });

  it('counts each chunk before it is written', async () => {
    const { sink } = holdingSink(0);
    let counted = 0;
    await feedFile(file, sink, { chunk: 8192, onChunk: (n) => (counted += n) });
    expect(counted).toBe(data.length);
  });

  it('a missing file rejects with its error and destroys the consumer with it', async () => {
    const { sink } = holdingSink(0);
    const err = await feedFile(join(dir, 'absent'), sink).catch((e: NodeJS.ErrnoException) => e);
    expect((err as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(sink.destroyed).toBe(true);
    expect((sink.errored as NodeJS.ErrnoException | null)?.code).toBe('ENOENT');
  });

  it('stops without error when the consumer is destroyed by its reader', async () => {
    let writes = 0;
    const sink = new Writable({
      write(_c: Buffer, _e, cb) {
        if (++writes === 2) sink.destroy();
        else cb();
      },
    });
    const fed = await feedFile(file, sink, { chunk: 1000 });
    expect(fed).toBeLessThan(data.length);
    expect(writes).toBe(2);
  });

  it('an abort rejects with its reason and destroys the consumer', async () => {
    const stop = new AbortController();
    const { sink } = holdingSink(5);
    const reason = new Error('stop here');
    setTimeout(() => stop.abort(reason), 10);
    await expect(feedFile(file, sink, { chunk: 1000, signal: stop.signal })).rejects.toBe(reason);
    expect(sink.destroyed).toBe(true);
  });
});

describe('feedFile lending its chunks', () => {
  /**
   * feedFile → a pass-through (which calls back while the chunk still sits in its buffer) → a reader
   * that holds each chunk a while, checks it is unchanged, and gives it back then or before.
   */
  async function through(giveBackAt: 'after' | 'before' | 'never') {
    const pass = new PassThrough({ highWaterMark: 8192 });
    const held: { buf: Buffer; copy: Buffer }[] = [];
    let changed = 0;
    const reader = new Writable({
      highWaterMark: 8192,
      write(c: Buffer, _e, cb) {
        const h = { buf: c, copy: Buffer.from(c) };
        held.push(h);
        if (giveBackAt === 'before') giveBack(c);
        setTimeout(() => {
          if (!h.buf.equals(h.copy)) changed++;
          if (giveBackAt === 'after') giveBack(c);
          cb();
        }, 1);
      },
    });
    const done = new Promise((r) => reader.on('finish', r));
    pass.pipe(reader);
    expect(await feedFile(file, pass, { chunk: 1000, lend: true })).toBe(data.length);
    await done;
    return { changed, chunks: held.length, buffers: new Set(held.map((h) => h.buf)).size, bytes: Buffer.concat(held.map((h) => h.copy)) };
  }

  it('reuses a chunk only once its last reader gave it back, through a pass-through that calls back early', async () => {
    const r = await through('after');
    expect(r.changed).toBe(0);
    expect(r.bytes.equals(data)).toBe(true);
    expect(r.chunks).toBe(100);
    expect(r.buffers).toBeLessThan(40);
  });

  it('never reuses a chunk its reader keeps', async () => {
    const r = await through('never');
    expect(r.changed).toBe(0);
    expect(r.bytes.equals(data)).toBe(true);
    expect(r.buffers).toBe(r.chunks);
  });

  it('a chunk given back while still held is overwritten (what lending prevents when the rule is kept)', async () => {
    const r = await through('before');
    expect(r.changed).toBeGreaterThan(0);
  });
});
