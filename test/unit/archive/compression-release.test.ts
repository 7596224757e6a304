import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { ZstdCompress, ZstdDecompress, compressor, releaserOf, decompressor } from '../../../src/archive/compression.js';
import { giveBack } from '../../../src/lending.js';

// 256 KiB, half random, out through 4 KiB buffers: 64 of them
const source = Buffer.concat([randomBytes(128 << 10), Buffer.alloc(128 << 10, 'tarport ')]);
const OUT = 4096;

async function squeeze(data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([data]), compressor('zstd'), new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) }));
  return Buffer.concat(out);
}

/** Decompresses through `onChunk`, which sees every buffer and may give it back. */
async function run(onChunk: (c: Buffer, dec: ZstdDecompress) => void): Promise<void> {
  const z = await squeeze(source);
  const dec = new ZstdDecompress(OUT);
  const pieces = Array.from({ length: Math.ceil(z.length / 5000) }, (_, i) => z.subarray(i * 5000, (i + 1) * 5000));
  await pipeline(Readable.from(pieces), dec, new Writable({ write: (c: Buffer, _e, cb) => (onChunk(c, dec), cb()) }));
}

describe('ZstdDecompress output buffers', () => {
  it('a reader that gives nothing back gets a fresh buffer every time, none overwritten', async () => {
    const kept: Buffer[] = [];
    await run((c) => kept.push(c));
    expect(new Set(kept).size).toBe(kept.length);
    expect(Buffer.concat(kept).equals(source)).toBe(true);
  });

  it('buffers given back are reused, and what was copied before is intact', async () => {
    const copies: Buffer[] = [];
    const seen = new Set<Buffer>();
    await run((c, dec) => {
      copies.push(Buffer.from(c));
      seen.add(c);
      dec.release(c);
    });
    expect(Buffer.concat(copies).equals(source)).toBe(true);
    // 64 outputs from a handful of buffers
    expect(copies.length).toBe(source.length / OUT);
    expect(seen.size).toBeLessThanOrEqual(3);
  });

  it('a buffer the reader keeps is never reused, while the ones it gives back are', async () => {
    const kept: { buf: Buffer; copy: Buffer }[] = [];
    const seen = new Set<Buffer>();
    let n = 0;
    await run((c, dec) => {
      seen.add(c);
      if (n++ % 2 === 0) kept.push({ buf: c, copy: Buffer.from(c) });
      else dec.release(c);
    });
    expect(kept.length).toBe(source.length / OUT / 2);
    for (const k of kept) expect(k.buf.equals(k.copy)).toBe(true);
    expect(new Set(kept.map((k) => k.buf)).size).toBe(kept.length);
    expect(seen.size).toBeLessThan(n);
  });

  it('a buffer it did not pass on, or a piece of one, is not taken back', async () => {
    const foreign = Buffer.alloc(OUT);
    const seen = new Set<Buffer>();
    const out: Buffer[] = [];
    await run((c, dec) => {
      seen.add(c);
      out.push(c);
      dec.release(foreign);
      dec.release(c.subarray(1));
    });
    expect(seen.has(foreign)).toBe(false);
    expect(seen.size).toBe(out.length);
    expect(Buffer.concat(out).equals(source)).toBe(true);
  });

  it('releaserOf gives the codec that takes buffers back, and none for gzip', () => {
    expect(releaserOf(new ZstdDecompress())).toBeTypeOf('function');
    expect(releaserOf(new ZstdCompress(0))).toBeTypeOf('function');
    expect(releaserOf(decompressor('gzip'))).toBeUndefined();
  });
});

/**
 * Compresses `data` (in 5000-byte pieces) into 16 KiB output buffers (zstd passes on a 128 KiB block
 * at a time: 8 of them) through a reader that holds each
 * buffer a while, then checks it still holds what it got: a buffer reused before it was given back
 * would have been overwritten by then. `giveBackAt`: when the reader gives a buffer back.
 */
async function compressHolding(data: Buffer, giveBackAt: 'never' | 'after' | 'before'): Promise<{ out: Buffer; seen: number; chunks: number; changed: number }> {
  const z = new ZstdCompress(0, 16 << 10);
  const pieces = Array.from({ length: Math.ceil(data.length / 5000) }, (_, i) => data.subarray(i * 5000, (i + 1) * 5000));
  const kept: { buf: Buffer; copy: Buffer }[] = [];
  let changed = 0;
  const sink = new Writable({
    highWaterMark: 32 << 10,
    write(c: Buffer, _e, cb) {
      const held = { buf: c, copy: Buffer.from(c) };
      kept.push(held);
      if (giveBackAt === 'before') giveBack(c);
      setImmediate(() => {
        if (!held.buf.equals(held.copy)) changed++;
        if (giveBackAt === 'after') giveBack(c);
        cb();
      });
    },
  });
  await pipeline(Readable.from(pieces), z, sink);
  const out = Buffer.concat(kept.map((k) => k.copy));
  return { out, seen: new Set(kept.map((k) => k.buf)).size, chunks: kept.length, changed };
}

describe('ZstdCompress output buffers', () => {
  // 2 MiB that zstd cannot shrink much: 128 output buffers of 16 KiB
  const mostlyRandom = Buffer.concat([randomBytes(2 << 20), Buffer.alloc(64 << 10, 'tarport ')]);

  it('compresses to zstd that decompresses to the source, in full buffers, with or without threads', async () => {
    for (const workers of [0, 2]) {
      const out: Buffer[] = [];
      await pipeline(Readable.from([source.subarray(0, 100_000), source.subarray(100_000)]), new ZstdCompress(workers, 1024), new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) }));
      expect(out.slice(0, -1).every((c) => c.length === 1024)).toBe(true);
      const back: Buffer[] = [];
      await pipeline(Readable.from([Buffer.concat(out)]), decompressor('zstd'), new Writable({ write: (c: Buffer, _e, cb) => (back.push(c), cb()) }));
      expect(Buffer.concat(back).equals(source), `${workers} workers`).toBe(true);
    }
  });

  it('reuses buffers given back after they were read, and no buffer changes while its reader holds it', async () => {
    const r = await compressHolding(mostlyRandom, 'after');
    expect(r.changed).toBe(0);
    expect(r.chunks).toBeGreaterThan(100);
    expect(r.seen).toBeLessThan(r.chunks / 2);
    const never = await compressHolding(mostlyRandom, 'never');
    expect(never.changed).toBe(0);
    expect(never.seen).toBe(never.chunks);
    expect(never.out.equals(r.out)).toBe(true);
  });

  it('a buffer given back while its reader still holds it is overwritten (what the rule above prevents)', async () => {
    const r = await compressHolding(mostlyRandom, 'before');
    expect(r.changed).toBeGreaterThan(0);
  });
});
