import { existsSync } from 'node:fs';
import { Duplex, Transform } from 'node:stream';
import { Worker } from 'node:worker_threads';
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
export async function threadedDecompressor(kind: Compression): Promise<Duplex> {
  if (kind !== 'zstd' || !existsSync(ZSTD_WORKER)) return decompressor(kind);
  const worker = spare ?? spawnZstdWorker();
  spare = undefined;
  worker.ref();
  // a thread takes ~45 ms to start: the next layer's starts now, while this one streams
  prewarmDecompressors();
  return new ThreadedZstd(worker);
}

let spare: Worker | undefined;

/** Starts a decompression thread ahead of need; an idle one does not keep the process alive. */
export function prewarmDecompressors(): void {
  if (!spare && existsSync(ZSTD_WORKER)) spare = spawnZstdWorker();
}

/** Stops the thread kept ready (after a load: an agent between polls holds none). */
export function releaseDecompressors(): void {
  void spare?.terminate();
  spare = undefined;
}

function spawnZstdWorker(): Worker {
  const w = new Worker(ZSTD_WORKER);
  w.unref();
  // a spare that fails to start is dropped; the one that takes it reports the error itself
  w.on('error', () => {
    if (spare === w) spare = undefined;
  });
  return w;
}

/** A decompressor; both fail on truncated input ("unexpected end of file", "ended in middle of frame"). */
export function decompressor(kind: Compression): Duplex {
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
 * zstd-napi's own stream passes on 128 KiB pieces (eight times the chunks, each one more object for
 * every stream downstream and for the garbage collector) and pushes all an input chunk holds at
 * once: a megabyte of compressed zeros can hold gigabytes. This one stops when the reader is behind
 * and goes on when it asks for more, so memory stays at a few buffers whatever the ratio.
 */
export class ZstdDecompress extends Duplex {
  private readonly dctx = new binding.DCtx();
  private out = Buffer.allocUnsafe(OUT);
  private pos = 0;
  private inFrame = false;
  /** Input not yet decompressed, and the callback that takes the next chunk once it is. */
  private src: Buffer = Buffer.alloc(0);
  private taken: ((e?: Error | null) => void) | undefined;
  /** The reader is behind: push nothing more until it asks (_read). */
  private behind = false;

  constructor() {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  override _write(chunk: Buffer, _e: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.src = chunk;
    this.taken = cb;
    this.pump();
  }

  override _read(): void {
    this.behind = false;
    if (this.taken) this.pump();
  }

  /** Decompresses the current input until it is used up, or until the reader is behind. */
  private pump(): void {
    const take = (e?: Error) => {
      const cb = this.taken;
      this.taken = undefined;
      cb?.(e);
    };
    try {
      while (!this.behind) {
        const room = OUT - this.pos;
        const [ret, produced, consumed] = this.dctx.decompressStream(this.out.subarray(this.pos), this.src);
        this.pos += produced;
        // 0: a frame ended. A call that moved nothing (the output had just filled up) says nothing
        // about the frame: after one ends, zstd answers with the size it wants of the next one.
        if (produced > 0 || consumed > 0) this.inFrame = ret !== 0;
        this.src = this.src.subarray(consumed);
        if (this.pos === OUT) {
          if (!this.push(this.out)) this.behind = true;
          this.out = Buffer.allocUnsafe(OUT);
          this.pos = 0;
        }
        // all input taken and the output not filled: zstd needs more input
        if (this.src.length === 0 && produced < room) return take();
      }
    } catch (e) {
      take(e as Error);
    }
  }

  override _final(cb: (e?: Error | null) => void): void {
    if (this.inFrame) {
      cb(new Error('Stream ended in middle of compressed data frame'));
      return;
    }
    if (this.pos > 0) this.push(this.out.subarray(0, this.pos));
    this.push(null);
    cb();
  }
}

const ZSTD_WORKER = new URL('./zstdworker.js', import.meta.url);
/** Compressed chunks handed to the thread at once. */
const IN_FLIGHT = 2;

/**
 * ZstdDecompress on a worker thread. Both directions are bounded: at most IN_FLIGHT input chunks
 * are out, and the thread sends a decompressed buffer only against a credit (zstdworker.ts), which
 * this side returns once the reader took the buffer. Memory stays at a few MiB whatever the ratio.
 */
class ThreadedZstd extends Duplex {
  private inFlight = 0;
  private readerBehind = false;
  private owed = 0;
  private blockedWrite: (() => void) | undefined;
  private finishing: ((e?: Error | null) => void) | undefined;

  constructor(private readonly worker: Worker) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    worker.on('message', (m: { out?: ArrayBuffer; took?: boolean; done?: boolean; error?: string }) => {
      if (m.out) {
        if (this.push(Buffer.from(m.out))) worker.postMessage({ credit: 1 });
        else {
          this.owed++;
          this.readerBehind = true;
        }
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
    // A chunk that owns its whole memory (file reads do) moves to the thread instead of being
    // copied: nothing reads it after this write, and the copies cost the collector ~0.2 s per image.
    const own = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer;
    if (own) this.worker.postMessage({ data: chunk }, [chunk.buffer as ArrayBuffer]);
    else this.worker.postMessage({ data: chunk });
    this.blockedWrite = () => cb();
    this.release();
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.finishing = cb;
    this.worker.postMessage({ end: true });
  }

  override _read(): void {
    this.readerBehind = false;
    if (this.owed > 0) {
      this.worker.postMessage({ credit: this.owed });
      this.owed = 0;
    }
    this.release();
  }

  override _destroy(e: Error | null, cb: (e?: Error | null) => void): void {
    void this.worker.terminate();
    cb(e);
  }
}
