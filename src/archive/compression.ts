import { existsSync } from 'node:fs';
import { Duplex, Transform } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import { createGunzip, createGzip } from 'node:zlib';
import { CompressStream } from 'zstd-napi';
import binding from 'zstd-napi/binding.js';

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

/**
 * A decompressor that runs on a thread of its own where that pays: zstd-napi decompresses
 * synchronously, so in one thread the stream it feeds (the daemon's load socket) stands still
 * while it works. gzip already runs on libuv's pool.
 */
export async function threadedDecompressor(kind: Compression): Promise<Transform | Duplex> {
  if (kind !== 'zstd' || !existsSync(ZSTD_WORKER)) return decompressor(kind);
  const { Worker } = await import('node:worker_threads');
  return new ThreadedZstd(new Worker(ZSTD_WORKER));
}

/** A decompressor; both fail on truncated input ("unexpected end of file", "ended in middle of frame"). */
export function decompressor(kind: Compression): Transform {
  switch (kind) {
    case 'zstd':
      return new ZstdDecompress();
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

const OUT = 1 << 20;

/**
 * zstd decompression into 1 MiB buffers, each filled across input chunks before it is passed on.
 * zstd-napi's own stream passes on 128 KiB pieces: eight times the chunks, each one more object for
 * every stream downstream and for the garbage collector (the load path moves ~0.5 GB per image).
 */
export class ZstdDecompress extends Transform {
  private readonly dctx = new binding.DCtx();
  private out = Buffer.allocUnsafe(OUT);
  private pos = 0;
  private inFrame = false;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, done: (e?: Error | null) => void): void {
    try {
      let src: Buffer = chunk;
      for (;;) {
        const room = OUT - this.pos;
        const [ret, produced, consumed] = this.dctx.decompressStream(this.out.subarray(this.pos), src);
        this.pos += produced;
        this.inFrame = ret !== 0;
        if (this.pos === OUT) {
          this.push(this.out);
          this.out = Buffer.allocUnsafe(OUT);
          this.pos = 0;
        }
        src = src.subarray(consumed);
        // all input taken and the output not filled: zstd needs more input
        if (src.length === 0 && produced < room) break;
      }
    } catch (e) {
      done(e as Error);
      return;
    }
    done();
  }

  override _flush(done: (e?: Error | null) => void): void {
    if (this.inFrame) {
      done(new Error('Stream ended in middle of compressed data frame'));
      return;
    }
    if (this.pos > 0) this.push(this.out.subarray(0, this.pos));
    done();
  }
}

const ZSTD_WORKER = new URL('./zstdworker.js', import.meta.url);
const IN_FLIGHT = 2;

/**
 * ZstdDecompress on a worker thread. At most IN_FLIGHT input chunks are out at once, and no more
 * input is taken while the reader is behind: memory stays bounded by a few MiB.
 */
class ThreadedZstd extends Duplex {
  private inFlight = 0;
  private readerBehind = false;
  private blockedWrite: (() => void) | undefined;
  private finishing: ((e?: Error | null) => void) | undefined;

  constructor(private readonly worker: Worker) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    worker.on('message', (m: { out?: ArrayBuffer; took?: boolean; done?: boolean; error?: string }) => {
      if (m.out) {
        if (!this.push(Buffer.from(m.out))) this.readerBehind = true;
      } else if (m.took) {
        this.inFlight--;
        this.release();
      } else if (m.done) {
        this.push(null);
        this.finishing?.();
        void worker.terminate();
      } else if (m.error !== undefined) {
        this.destroy(new Error(m.error));
      }
    });
    worker.on('error', (e) => this.destroy(e));
  }

  private release(): void {
    if (this.blockedWrite && this.inFlight < IN_FLIGHT && !this.readerBehind) {
      const cb = this.blockedWrite;
      this.blockedWrite = undefined;
      cb();
    }
  }

  override _write(chunk: Buffer, _e: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.inFlight++;
    this.worker.postMessage({ data: chunk });
    this.blockedWrite = () => cb();
    this.release();
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.finishing = cb;
    this.worker.postMessage({ end: true });
  }

  override _read(): void {
    this.readerBehind = false;
    this.release();
  }

  override _destroy(e: Error | null, cb: (e?: Error | null) => void): void {
    void this.worker.terminate();
    cb(e);
  }
}
