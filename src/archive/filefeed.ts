import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { Lender } from '../lending.js';

/** Bytes per read, as the 1 MiB file streams elsewhere read. */
export const FEED_CHUNK = 1 << 20;
/** Buffers in the ring: one being read while two are with the consumer. */
const RING = 3;
/** Lent chunks given back and waiting for reuse (a few pass-throughs lie between feed and reader). */
const LEND_KEPT = 8;

export interface FeedOptions {
  /** First byte to read (default 0). */
  start?: number;
  /** Bytes to read from `start` (default: to the end of the file). */
  length?: number;
  /** Bytes per read (default FEED_CHUNK). */
  chunk?: number;
  /** Stops the feed: `into` is destroyed with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Called with each chunk (and its size) before it is written: a bomb guard counts its input here,
   * a digest check hashes it. A throw fails the feed.
   */
  onChunk?: (bytes: number, chunk: Buffer) => void;
  /**
   * Lend each chunk (src/lending.ts) instead of reusing it after its write callback: for a consumer
   * that passes chunks on (a pass-through, a hashing stage) to a last reader that gives them back
   * (a compressor once it took a chunk in, a file once it wrote it). A chunk not given back is
   * never reused: its slot reads into a fresh buffer.
   */
  lend?: boolean;
  /** The file is still being written: read only what `follow` says is there (Follow). */
  follow?: Follow;
}

/** A file written as it is read (the consumer's cache: Download in src/consumer/cache.ts). */
export interface Follow {
  /**
   * How many bytes from `position` can be read: waits until there are `wanted`, or as many as the
   * writer will let be read before it ends; 0 once the file is complete and `position` is its end.
   * Rejects with the writer's fault.
   */
  readable(position: number, wanted: number): Promise<number>;
}

/**
 * Writes a file (or a range of it) into `into` and ends it, reading into a ring of a few buffers it
 * reuses instead of a fresh buffer per read as fs.createReadStream does: fresh megabytes fault their
 * pages in from the kernel and miss the CPU's cache, which cost more CPU than zstd's whole
 * decompression of the same bytes (docs/install.md, "zstd speed, measured").
 *
 * A buffer is reused only after `into`'s write callback for it has run, so `into` must be done with
 * a chunk when it calls back: a decompressor is (ZstdDecompress calls back once its input is used
 * up, Node's zlib streams once their handle has consumed it), a pass-through that forwards the chunk
 * is not (it calls back while the chunk sits in its readable buffer). A consumer that transfers a
 * chunk's memory to a thread (ThreadedZstd) gets a fresh buffer in that slot next time. Resolves with the bytes fed;
 * on a read fault, an abort or a write error `into` is destroyed with the error and the promise
 * rejects with it. Stops without error once `into` is destroyed by its reader.
 */
export async function feedFile(path: string | FileHandle, into: Writable, opts: FeedOptions = {}): Promise<number> {
  const size = opts.chunk ?? FEED_CHUNK;
  const lender = opts.lend ? new Lender(size, LEND_KEPT) : undefined;
  const slots = Array.from({ length: RING }, () => ({ buf: (lender ? Buffer.alloc(0) : Buffer.allocUnsafeSlow(size)) as Buffer, busy: undefined as Promise<void> | undefined }));
  // an open file is the feed's to close
  const fh = typeof path === 'string' ? await open(path, 'r').catch((e: unknown) => {
    into.destroy(e as Error);
    throw e;
  }) : path;
  let fed = 0;
  try {
    const end = opts.length === undefined ? Infinity : opts.length;
    for (let i = 0; fed < end; i = (i + 1) % RING) {
      const slot = slots[i]!;
      await slot.busy;
      // a consumer that moved the chunk's memory to another thread (postMessage's transfer) left
      // it detached: that slot takes a fresh buffer
      if (lender) slot.buf = lender.take();
      else if (slot.buf.buffer.byteLength === 0) slot.buf = Buffer.allocUnsafeSlow(size);
      opts.signal?.throwIfAborted();
      if (into.destroyed) return fed;
      // a followed file: wait for its writer (a fault of its own or of the reader ends the wait)
      const there = opts.follow ? await opts.follow.readable((opts.start ?? 0) + fed, Math.min(size, end - fed)) : Infinity;
      if (there === 0) break;
      opts.signal?.throwIfAborted();
      if (into.destroyed) return fed;
      const want = Math.min(size, end - fed, there);
      const { bytesRead } = await fh.read(slot.buf, 0, want, (opts.start ?? 0) + fed);
      if (bytesRead === 0) break;
      fed += bytesRead;
      const chunk = lender && bytesRead === size ? lender.lend(slot.buf) : slot.buf.subarray(0, bytesRead);
      opts.onChunk?.(bytesRead, chunk);
      slot.busy = written(into, chunk);
      slot.busy.catch(() => undefined); // awaited before the slot's next read, or below
    }
    await Promise.all(slots.map((s) => s.busy));
    if (!into.destroyed) into.end();
    return fed;
  } catch (e) {
    const err = opts.signal?.aborted ? (opts.signal.reason as Error) : (e as Error);
    if (!into.destroyed) into.destroy(err);
    throw err;
  } finally {
    await fh.close();
  }
}

/** Writes a chunk; settles when `into` calls back for it (or is destroyed, which never calls back). */
function written(into: Writable, chunk: Buffer): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onClose = () => resolve();
    into.once('close', onClose);
    into.write(chunk, (e) => {
      into.off('close', onClose);
      // a consumer that failed or was closed reports that itself, to the reader of its output
      if (e && !into.destroyed) reject(e);
      else resolve();
    });
  });
}
