import { Transform, type TransformCallback } from 'node:stream';

/**
 * Decompression may produce at most this many bytes per compressed byte (once past FREE_OUTPUT),
 * unless the producer says otherwise (`--max-expansion`). A real image archive compresses a few
 * times (layers of libraries: 3x; text: 10-20x); 200x means more than 99.5% of it is one repeated
 * byte. gzip reaches ~1030x on zeros and zstd 30000x and more (a megabyte of it holds tens of
 * gigabytes): without this, the time a hostile file costs grows with what it claims, not with its
 * size. A layer that really is almost all zeros (a preallocated file, a disk image) comes compressed
 * in an OCI archive, where the producer cannot send it otherwise: the message names the flag.
 */
export const MAX_RATIO = 200;
/** Output below this is never refused: small archives pad with zeros. */
export const FREE_OUTPUT = 256 << 20;

/** A compressed stream that expands beyond MAX_RATIO: the fault, typed (the caller names the file). */
export class DecompressionBombError extends Error {
  constructor(
    readonly inBytes: number,
    readonly outBytes: number,
    readonly maxRatio: number,
  ) {
    super(
      `decompresses to more than ${maxRatio} times its size (${outBytes} bytes from the first ${inBytes}): a decompression bomb, or a file of almost nothing but zeros ` +
        '(a preallocated file or a disk image); an archive you trust is read whole with --max-expansion 0 (no limit) or a higher ratio',
    );
    this.name = 'DecompressionBombError';
  }
}

/**
 * A pair of counting pass-throughs to put on both sides of a decompressor: `input` counts the
 * compressed bytes, `output` the decompressed ones, and fails the stream at the first chunk that
 * goes beyond the ratio. Time and disk spent on a bomb stay proportional to its size on disk.
 */
export function bombGuard(maxRatio = MAX_RATIO): { input: Transform; output: Transform; countInput: (bytes: number) => void } {
  const limit = maxRatio === 0 ? Infinity : maxRatio;
  let inBytes = 0;
  let outBytes = 0;
  const input = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb: TransformCallback) {
      inBytes += chunk.length;
      cb(null, chunk);
    },
  });
  const output = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb: TransformCallback) {
      outBytes += chunk.length;
      if (outBytes > FREE_OUTPUT && outBytes > limit * inBytes) cb(new DecompressionBombError(inBytes, outBytes, maxRatio));
      else cb(null, chunk);
    },
  });
  // a reader that feeds the decompressor itself (feedFile) counts here instead of through `input`
  const countInput = (bytes: number) => {
    inBytes += bytes;
  };
  return { input, output, countInput };
}
