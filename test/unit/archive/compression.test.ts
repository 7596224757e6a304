import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as Compression from '../../../src/archive/compression.js';
import { zstdMemory } from '../../helpers.js';

// the built module: the worker thread runs dist/archive/zstdworker.js (scripts/test builds first).
// Typed by its source, so that the type-check of test/ needs no build.
const built = '../../../dist/archive/compression.js';
const { compressor, preferZstdCodec, threadedDecompressor, releaserOf, useDecompressionThread } = (await import(built).catch((e: unknown) => {
  throw new Error(`${built} is not there: run npm run build first (${String(e)})`);
})) as typeof Compression;

async function squeeze(data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([data]), compressor('zstd'), new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) }));
  return Buffer.concat(out);
}

async function expand(z: Buffer, chunk = 1 << 20, slow = false, own = false): Promise<Buffer> {
  const dec = await threadedDecompressor('zstd');
  expect(dec.constructor.name).toBe('ThreadedZstd');
  // own: each piece in memory of its own (as file reads are), which moves to the thread uncopied
  const pieces = Array.from({ length: Math.ceil(z.length / chunk) }, (_, i) => z.subarray(i * chunk, (i + 1) * chunk)).map((p) => (own ? Buffer.from(p) : p));
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(pieces),
    dec,
    new Writable({ highWaterMark: 1, write: (c: Buffer, _e, cb) => (out.push(c), slow ? setTimeout(cb, 1) : cb()) }),
  );
  return Buffer.concat(out);
}

describe('zstd on a worker thread', () => {
  // the thread serves zstd-napi (a dev dependency); Node's own zstd runs on libuv's pool instead
  // half random, half repetitive: output chunks of every size, frames across input chunks
  const data = Buffer.concat([randomBytes(6 << 20), Buffer.alloc(10 << 20, 'tarport '), randomBytes(123_457)]);
  // the same shape, small: fed in 4 KiB pieces each goes to the thread and back (a wake-up each,
  // which a busy machine makes slow), and a few hundred of them cross every frame boundary already
  const small = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(1 << 20, 'tarport '), randomBytes(12_347)]);
  let z: Buffer;
  let zSmall: Buffer;
  beforeAll(async () => {
    preferZstdCodec('zstd-napi');
    useDecompressionThread(true);
    z = await squeeze(data);
    zSmall = await squeeze(small);
  });
  afterAll(() => {
    preferZstdCodec(undefined);
    useDecompressionThread(false);
  });

  it('is off by default: a load decompresses in this thread', async () => {
    useDecompressionThread(false);
    try {
      expect((await threadedDecompressor('zstd')).constructor.name).toBe('ZstdDecompress');
    } finally {
      useDecompressionThread(true);
    }
  });

  it('gives back exactly what was compressed, whatever the input chunking and a slow reader', async () => {
    expect((await expand(z)).equals(data)).toBe(true);
    expect((await expand(zSmall, 4099)).equals(small)).toBe(true);
    expect((await expand(z, 1 << 20, true)).equals(data)).toBe(true);
    expect((await expand(z, 1 << 20, false, true)).equals(data)).toBe(true);
    expect((await expand(z, 64 << 10, true, true)).equals(data)).toBe(true);
  });

  it('takes back, across threads, buffers its reader gives back once done, and none changes while held', async () => {
    const dec = await threadedDecompressor('zstd');
    const giveBack = releaserOf(dec);
    const held: { buf: Buffer; copy: Buffer }[] = [];
    let changed = 0;
    let detached = 0;
    await pipeline(
      Readable.from([z]),
      dec,
      new Writable({
        highWaterMark: 2 << 20,
        write(c: Buffer, _e, cb) {
          const h = { buf: c, copy: Buffer.from(c) };
          held.push(h);
          setImmediate(() => {
            if (!h.buf.equals(h.copy)) changed++;
            giveBack!(c);
            // its memory went back to the thread: this side holds no view of it any more
            if (c.length === 0) detached++;
            cb();
          });
        },
      }),
    );
    expect(Buffer.concat(held.map((h) => h.copy)).equals(data)).toBe(true);
    expect(changed).toBe(0);
    // those given back before the thread ended (the last few come after it: left to the collector)
    expect(detached).toBeGreaterThan(held.length / 2);
  });

  it('fails on a cut stream and on bytes that are not zstd', async () => {
    await expect(expand(zSmall.subarray(0, zSmall.length - 1000))).rejects.toMatchObject({ code: 'BAD_INPUT', truncated: true });
    const bad = Buffer.from(zSmall);
    bad.fill(0x55, 20, 4000);
    await expect(expand(bad)).rejects.toMatchObject({ code: 'BAD_INPUT', truncated: false });
  });

  it('keeps memory flat on a stream of zeros (256 MiB from a few KiB) read slowly, on this thread and on its own', async () => {
    // 256 MiB out of four frames of 64 MiB of zeros each, as codec.test.ts makes it: compressing the
    // whole output as one frame costs more, and a decoder holds a window, never a frame. Flat is
    // proven by a bound proportional to the output: a decoder that kept its output would hold all
    // 256 MiB, one that holds a window stays near its base (under 64 MiB measured, at 1 GiB out as
    // well; a gibibyte proved no more and cost seconds of CPU per decoder in every unit run). In a
    // process of its own (test/zstd-memory.mjs): the unit files' threads share this one's memory
    const out = 256;
    for (const decoder of ['stream', 'threaded']) {
      const r = await zstdMemory(decoder, out);
      expect(r.in, decoder).toBeLessThan(1 << 20); // one input chunk holds the whole output
      expect(r.decoder, decoder).toBe(decoder === 'stream' ? 'ZstdDecompress' : 'ThreadedZstd');
      expect(r.n, decoder).toBe(out << 20);
      expect(r.peak, decoder).toBeLessThan((out << 20) / 2);
    }
  });

  it('decodes 40 layers one after another in the memory of a few: contexts and output buffers are reused, not left to a collection', async () => {
    // each ZstdDecompress with a fresh context (its window is native memory V8 does not count) and
    // fresh buffers grew the process by ~110 MiB over 40 layers of 2 MiB, and a 40-layer pull past
    // its 256 MiB bound; reused, by ~3 MiB. In a process of its own (test/zstd-memory.mjs)
    const r = await zstdMemory('layers', 40);
    expect(r.n).toBe(40 * (2 << 20));
    expect(r.peak).toBeLessThan(40 << 20);
  });
});
