import { describe, expect, it, vi } from 'vitest';
import { compressor, decompressor, threadedDecompressor } from '../../../src/archive/index.js';
import { THREADED_FROM, layerDecompressor } from '../../../src/consumer/pull.js';
import type { LayerDescriptor } from '../../../src/repo/index.js';

// threadedDecompressor replaced by a spy that hands back the plain decompressor: which layers ask
// for a thread is what is tested
vi.mock(import('../../../src/archive/index.js'), async (original) => {
  const m = await original();
  return { ...m, threadedDecompressor: vi.fn(async (c: Parameters<typeof m.decompressor>[0]) => m.decompressor(c)) };
});

const layer = (size: number) => ({ size }) as LayerDescriptor;

async function roundTrip(d: Awaited<ReturnType<ReturnType<typeof layerDecompressor>>>, data: Buffer): Promise<Buffer> {
  const c = compressor('zstd');
  const packed: Buffer[] = [];
  c.on('data', (b: Buffer) => packed.push(b));
  await new Promise<void>((resolve, reject) => c.on('end', resolve).on('error', reject).end(data));
  const out: Buffer[] = [];
  d.on('data', (b: Buffer) => out.push(b));
  await new Promise<void>((resolve, reject) => d.on('end', resolve).on('error', reject).end(Buffer.concat(packed)));
  return Buffer.concat(out);
}

describe('layerDecompressor', () => {
  it('decompresses a layer stored in under 8 MiB on this thread, without starting a thread', async () => {
    vi.mocked(threadedDecompressor).mockClear();
    const d = await layerDecompressor(layer(THREADED_FROM - 1))('zstd');
    expect(threadedDecompressor).not.toHaveBeenCalled();
    expect(d.constructor).toBe(decompressor('zstd').constructor);
    const data = Buffer.from('a small layer '.repeat(1000));
    expect((await roundTrip(d, data)).equals(data)).toBe(true);
  });

  it('gives a layer of 8 MiB or more a thread of its own', async () => {
    vi.mocked(threadedDecompressor).mockClear();
    await layerDecompressor(layer(THREADED_FROM))('zstd');
    expect(threadedDecompressor).toHaveBeenCalledWith('zstd');
  });
});
