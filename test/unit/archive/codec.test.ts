import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import type * as Compression from '../../../src/archive/compression.js';
import type { ZstdCodec } from '../../../src/archive/compression.js';
import { zstdMemory } from '../../helpers.js';

// the built module, as compression.test.ts: its worker thread runs from dist/; typed by its source
const built = '../../../dist/archive/compression.js';
const { decompressor, zstdCodec, zstdCodecs, zstdCompressor, zstdDecompressor } = (await import(built).catch((e: unknown) => {
  throw new Error(`${built} is not there: run npm run build first (${String(e)})`);
})) as typeof Compression;

const nodeHasZstd = Number(process.versions.node.split('.')[0]) >= 24 || /^(22\.(1[5-9]|[2-9]\d)|23\.([89]|\d\d))\./.test(process.versions.node);

async function through(input: Buffer, t: NodeJS.ReadWriteStream, chunk = 1 << 20): Promise<Buffer> {
  const pieces = Array.from({ length: Math.ceil(input.length / chunk) }, (_, i) => input.subarray(i * chunk, (i + 1) * chunk));
  const out: Buffer[] = [];
  await pipeline(Readable.from(pieces), t, new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) }));
  return Buffer.concat(out);
}

describe('zstd codecs', () => {
  // every codec this process has: Node's own where the Node version has it, zstd-napi (a dev dependency)
  const codecs = zstdCodecs();
  const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(5 << 20, 'tarport layer '), randomBytes(77_777)]);

  it("uses zstd-napi where it is installed (the faster here), and Node's own zstd where the Node version has it", () => {
    expect(codecs).toEqual(nodeHasZstd ? ['zstd-napi', 'node-zlib'] : ['zstd-napi']);
    expect(zstdCodec()).toBe(codecs[0]);
  });

  it.each(codecs)('%s: what one codec compresses, every codec gives back byte for byte', async (c: ZstdCodec) => {
    const z = await through(data, zstdCompressor(c));
    expect(z.readUInt32LE(0)).toBe(0xfd2fb528);
    // a frame checksum (frame header descriptor bit 2): corruption that keeps the frame parseable is caught
    expect(z[4]! & 0x04).toBe(0x04);
    for (const d of codecs) expect((await through(z, zstdDecompressor(d), 4099)).equals(data), `${c} → ${d}`).toBe(true);
  });

  it.each(codecs)('%s: with the size of a small input given (no zstd threads), the frame is the same format and reads back', async (c: ZstdCodec) => {
    const small = data.subarray(0, 300_000);
    const z = await through(small, zstdCompressor(c, small.length));
    expect(z.readUInt32LE(0)).toBe(0xfd2fb528);
    expect(z[4]! & 0x04).toBe(0x04);
    for (const d of codecs) expect((await through(z, zstdDecompressor(d), 4099)).equals(small), `${c} → ${d}`).toBe(true);
  });

  it.each(codecs)('%s: a cut stream fails as truncated input, garbage as bad input (typed, not by message)', async (c: ZstdCodec) => {
    const z = await through(data, zstdCompressor(c));
    await expect(through(z.subarray(0, z.length - 1000), zstdDecompressor(c))).rejects.toMatchObject({ name: 'TarportError', code: 'BAD_INPUT', truncated: true });
    const bad = Buffer.from(z);
    bad.fill(0x55, 6, 4000);
    await expect(through(bad, zstdDecompressor(c))).rejects.toMatchObject({ name: 'TarportError', code: 'BAD_INPUT', truncated: false });
  });

  it.each(codecs)('%s: 256 MiB of zeros from a few KiB, read slowly, keeps memory flat', async (c: ZstdCodec) => {
    // four frames of 64 MiB: 256 MiB out of a few KiB in. The bound is half the output: a decoder
    // that kept its output would hold all of it, one that holds a window stays near its base (under
    // 64 MiB measured, at 1 GiB out as well); a gibibyte proved no more for seconds more CPU. In a
    // process of its own (test/zstd-memory.mjs): the unit files' threads share this one's memory
    const r = await zstdMemory(c, 256);
    expect(r.in).toBeLessThan(1 << 20);
    expect(r.n).toBe(256 << 20);
    expect(r.peak).toBeLessThan(128 << 20);
  });

  it('decompressor("zstd") is the chosen codec; gzip and none are untouched by the choice', async () => {
    const z = await through(data, zstdCompressor(codecs[0]!));
    expect((await through(z, decompressor('zstd'))).equals(data)).toBe(true);
    expect((await through(data, decompressor('none'))).equals(data)).toBe(true);
  });
});

describe('a zstd frame with a window past the decoder\'s bound', () => {
  // a valid frame, by hand: no content size, window descriptor 1 GiB (exponent 20: 2^(10+20)), one
  // raw last block of one byte; zstd --long=30 of a stream writes such a header
  const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3, 0x09, 0x00, 0x00, 0x41]);

  it.each(zstdCodecs())('%s: refused, saying the window is the reason and what to do, not as data that is not zstd', async (c: ZstdCodec) => {
    const e = await through(frame, zstdDecompressor(c)).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'BAD_INPUT', message: expect.stringContaining('zstd: the data asks for a window larger than tarport decodes (at most 128 MiB') });
  });
});
