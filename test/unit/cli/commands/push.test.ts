import { describe, expect, it, vi } from 'vitest';

// a Node with no zstd at all: Node 20's zlib has none, and the optional zstd-napi is not installed
const codecs = vi.hoisted(() => ({ none: false }));
vi.mock('../../../../src/archive/index.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../../../src/archive/index.js')>();
  return { ...real, zstdCodecs: () => (codecs.none ? [] : real.zstdCodecs()) };
});
const { compressionOf } = await import('../../../../src/cli/commands/push.js');

describe('the layer compression of push and watch', () => {
  it('is zstd by default where this Node has a zstd codec, without a warning', () => {
    codecs.none = false;
    const warn = vi.fn();
    expect(compressionOf(undefined, warn)).toBe('zstd');
    expect(warn).not.toHaveBeenCalled();
  });

  it('falls back to gzip with a warning that says why, where there is no zstd codec', () => {
    codecs.none = true;
    const warn = vi.fn();
    expect(compressionOf(undefined, warn)).toBe('gzip');
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toMatch(new RegExp(`zstd is not available in Node ${process.versions.node.replace(/\./g, '\\.')} .*gzip-compressed instead`));
  });

  it('keeps an explicit choice, zstd included, where there is no zstd codec (the push then stops with exit 2)', () => {
    codecs.none = true;
    const warn = vi.fn();
    expect(compressionOf('zstd', warn)).toBe('zstd');
    expect(compressionOf('gzip', warn)).toBe('gzip');
    expect(compressionOf('none', warn)).toBe('none');
    expect(warn).not.toHaveBeenCalled();
    expect(() => compressionOf('lz4', warn)).toThrow(/--compress "lz4": use zstd, gzip or none/);
  });
});
