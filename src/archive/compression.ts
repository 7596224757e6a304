import { Transform } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { CompressStream, DecompressStream } from 'zstd-napi';

export type Compression = 'none' | 'gzip' | 'zstd';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'gzip', 'none'];

/** Sniffs the compression of a stream from its first bytes. */
export function sniffCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

/** zstd level 3 on both cores: the speed the design budget assumes (LIMITS.md). */
export function compressor(kind: Compression): Transform {
  switch (kind) {
    case 'zstd':
      return new CompressStream({ compressionLevel: 3, nbWorkers: 2, checksumFlag: true });
    case 'gzip':
      return createGzip({ level: 6, chunkSize: 1 << 20 });
    case 'none':
      return passThrough();
  }
}

/** A decompressor; both fail on truncated input ("unexpected end of file", "ended in middle of frame"). */
export function decompressor(kind: Compression): Transform {
  switch (kind) {
    case 'zstd':
      return new DecompressStream();
    case 'gzip':
      return createGunzip({ chunkSize: 1 << 20 });
    case 'none':
      return passThrough();
  }
}

function passThrough(): Transform {
  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb) {
      cb(null, chunk);
    },
  });
}
