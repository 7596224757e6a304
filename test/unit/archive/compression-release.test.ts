import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { ZstdDecompress, compressor, releaserOf, decompressor } from '../../../src/archive/compression.js';

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

  it('releaserOf gives the decompressor that takes buffers back, and none for gzip', () => {
    expect(releaserOf(new ZstdDecompress())).toBeTypeOf('function');
    expect(releaserOf(decompressor('gzip'))).toBeUndefined();
  });
});
