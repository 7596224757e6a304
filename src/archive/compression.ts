import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Duplex, Transform, type TransformCallback } from 'node:stream';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { createGunzip, createGzip } from 'node:zlib';
import { TarportError } from '../errors.js';
import { Lender, giveBack, lendOut } from '../lending.js';
import { defaultCandidates, findBinding, type BindingSearch, type BindingSource, type Candidate } from './zstdnative.js';

export type Compression = 'none' | 'gzip' | 'zstd';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'gzip', 'none'];

/**
 * Sniffs the compression of a stream from its first bytes. A zstd stream may open with a skippable
 * frame (magic 0x184D2A50 to 0x184D2A5F): pzstd, zstd's parallel tool, writes one before each frame.
 */
export function sniffCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && (head.readUInt32LE(0) === 0xfd2fb528 || (head.readUInt32LE(0) & 0xfffffff0) === 0x184d2a50)) return 'zstd';
  return 'none';
}

/** Compressions that docker load takes and tarport does not, by their magic numbers, for a message that names them. */
const FOREIGN: readonly { name: string; article: string; magic: Buffer; undo: string }[] = [
  { name: 'xz', article: 'an', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), undo: 'xz -d' },
  { name: 'bzip2', article: 'a', magic: Buffer.from('BZh', 'latin1'), undo: 'bzip2 -d' },
  { name: 'lz4', article: 'an', magic: Buffer.from([0x04, 0x22, 0x4d, 0x18]), undo: 'lz4 -d' },
  { name: 'lzip', article: 'an', magic: Buffer.from('LZIP', 'latin1'), undo: 'lzip -d' },
];

/** The compression tarport does not read that `head` opens with, and the command that undoes it. */
export function foreignCompression(head: Buffer): { name: string; article: string; undo: string } | undefined {
  const f = FOREIGN.find((c) => head.length >= c.magic.length && head.subarray(0, c.magic.length).equals(c.magic));
  return f && { name: f.name, article: f.article, undo: f.undo };
}

/**
 * Where zstd comes from. zstd-napi (the zstd library's own C code, a Node-API addon) is preferred:
 * installed beside tarport (a dev dependency), else the binary tarport's build carries (beside the
 * bundle in the npm package, an asset inside the single executable: zstdnative.ts). Node's own zlib
 * has zstd from 22.15 / 23.8 (native, streams on libuv's pool, nothing to load) and serves where no
 * binary loads. scripts/bench measures both against the CLI.
 */
export type ZstdCodec = 'node-zlib' | 'zstd-napi';

/**
 * The zstd codecs this process can use, the preferred first: zstd-napi where its binary loads (its
 * streams here reuse their buffers: 0.82-0.94 x the CLI's speed where Node's own zlib streams
 * measured 0.24-0.46, docs/install.md), then Node's own (where no binary loads).
 */
export function zstdCodecs(): ZstdCodec[] {
  const have: ZstdCodec[] = [];
  if (napi()) have.push('zstd-napi');
  if (nodeZstd()) have.push('node-zlib');
  return have;
}

let preferred: ZstdCodec | undefined;

/** Makes zstd streams use this codec while it is available (tests and scripts/bench compare them). */
export function preferZstdCodec(codec: ZstdCodec | undefined): void {
  preferred = codec;
}

/** The codec zstd streams use here; a clear refusal where there is none. */
export function zstdCodec(): ZstdCodec {
  const have = zstdCodecs();
  const c = preferred && have.includes(preferred) ? preferred : have[0];
  if (!c) {
    throw new TarportError(
      'CONFIG',
      `zstd is not available in Node ${process.versions.node}${zstdNotLoadedNote()}: it is built into Node >= 22.15 (or use the single executable, docs/install.md), ` +
        'or install zstd-napi beside tarport (npm install -g zstd-napi); --compress gzip works without it',
    );
  }
  return c;
}

/**
 * zstd level 3 with a frame checksum (zstd-napi on both cores, as LIMITS.md measured). zstd-napi's
 * (ZstdCompress) lends its output and gives back lent input chunks once taken in: nothing before it
 * may still hold its input chunks (src/lending.ts).
 */
export function compressor(kind: Compression, sizeHint?: number): Transform {
  switch (kind) {
    case 'zstd':
      return zstdCompressor(zstdCodec(), sizeHint);
    case 'gzip':
      return createGzip({ level: 6, chunkSize: 1 << 20 });
    case 'none':
      return passThrough();
  }
}

/**
 * Whether zstd-napi decompresses for a load on a thread of its own (ThreadedZstd). Off: measured on
 * 320 MiB into a pipe (docs/install.md), the thread cost 1.9-2.2 s of CPU and 3.2-4.8 s of wall
 * time, the same stream in this thread with its buffers given back by the socket 0.45-0.48 s and
 * 0.8-2.1 s (the thread's messages and the fresh memory its transfers leave behind cost more than
 * the pauses it saves: this thread decompresses at most 1 MiB, a millisecond or two, per step).
 */
let onThread = false;

/** Turns the decompression thread on or off (tests and scripts/bench measure both). */
export function useDecompressionThread(on: boolean): void {
  onThread = on;
}

/**
 * The decompressor for a load: on a thread of its own where that is turned on (useDecompressionThread)
 * and zstd-napi serves; in this thread otherwise. Node's zlib already runs on libuv's pool.
 */
export async function threadedDecompressor(kind: Compression): Promise<Duplex> {
  if (!onThread || kind !== 'zstd' || zstdCodec() !== 'zstd-napi' || !workerFile()) return decompressor(kind);
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
  if (onThread && !spare && zstdCodecs().length > 0 && zstdCodec() === 'zstd-napi' && workerFile()) spare = spawnZstdWorker();
}

/** Stops the thread kept ready (after a load: an agent between polls holds none). */
export function releaseDecompressors(): void {
  void spare?.terminate();
  spare = undefined;
}

function spawnZstdWorker(): Worker {
  const w = new Worker(workerFile()!);
  w.unref();
  // a spare that fails to start is dropped; the one that takes it reports the error itself
  w.on('error', () => {
    if (spare === w) spare = undefined;
  });
  return w;
}

/**
 * A decompressor. Both fail on truncated input; zstd's failures are TarportErrors (BAD_INPUT, with
 * `truncated` set when the stream ends inside a frame).
 */
export function decompressor(kind: Compression): Duplex {
  switch (kind) {
    case 'zstd':
      return zstdDecompressor(zstdCodec());
    case 'gzip':
      return createGunzip({ chunkSize: 1 << 20 });
    case 'none':
      return passThrough();
  }
}

/**
 * How a reader that is done with a decompressor's output buffer gives it back for reuse (see
 * ZstdDecompress.release); undefined where the decompressor takes none back (Node's zlib, gzip).
 */
export function releaserOf(d: Duplex): ((buf: Buffer) => void) | undefined {
  return d instanceof ZstdDecompress || d instanceof ZstdCompress || d instanceof ThreadedZstd ? giveBack : undefined;
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
/** Given-back output buffers kept for reuse (the reader holds at most a few at once). */
const FREE_KEPT = 4;

/**
 * Decompression contexts and output buffers outlive their stream, shared by every decompression of
 * the process: a context's window (up to 8 MiB) is native memory that V8 does not count, freed only
 * when a collection happens to run, so a pull of 40 layers, a fresh context and fresh buffers each,
 * grew by ~110 MiB and went over its 256 MiB bound. A context goes back only from a stream that
 * ended cleanly, reset; one that failed is dropped.
 */
const idleDctx: Dctx[] = [];
const DCTX_KEPT = 4;
const outLenders = new Map<number, Lender>();
function outLender(size: number): Lender {
  let l = outLenders.get(size);
  if (!l) outLenders.set(size, (l = new Lender(size, 2 * FREE_KEPT)));
  return l;
}
/** Compressed output passes a few pass-throughs and a file's write buffer before it is given back. */
const COMPRESS_KEPT = 8;

/**
 * Below this many input bytes zstd-napi compresses on the calling thread: zstd's worker threads
 * split the input in jobs of several MiB, so a smaller layer gains nothing from them, and each
 * context starts its threads and their buffers anew (a 40-layer push spent about twice the CPU of
 * the same bytes in 4 layers).
 */
const THREADED_FROM = 8 << 20;

/**
 * zstd's worker threads for a large input: one per core but the one this thread needs to read, hash
 * and write (at most two). On two cores that is one, as the CLI's `zstd -3` runs one worker beside
 * its I/O thread: a second one measured up to twice as slow on a busy 2-core host, for little gain
 * on a quiet one (docs/install.md).
 */
export const COMPRESS_WORKERS = Math.min(2, Math.max(1, availableParallelism() - 1));

/** A zstd compressor (level 3, with a frame checksum) from the given codec. `sizeHint`: the input's size when known (a tar entry's); small inputs skip zstd's threads. */
export function zstdCompressor(codec: ZstdCodec, sizeHint?: number): Transform {
  if (codec === 'node-zlib') {
    const z = nodeZstd()!;
    const c = zlib.constants as Record<string, number>;
    const params = { [c.ZSTD_c_compressionLevel!]: 3, [c.ZSTD_c_checksumFlag!]: 1 };
    return typedErrors(z.createZstdCompress({ params, chunkSize: OUT }));
  }
  const nbWorkers = sizeHint !== undefined && sizeHint < THREADED_FROM ? 0 : COMPRESS_WORKERS;
  return new ZstdCompress(nbWorkers);
}

/** A zstd decompressor from the given codec; it stops while its reader is behind (see ZstdDecompress). */
export function zstdDecompressor(codec: ZstdCodec): Duplex {
  if (codec === 'node-zlib') return typedErrors(nodeZstd()!.createZstdDecompress({ chunkSize: OUT }));
  return new ZstdDecompress();
}

interface NodeZstd {
  createZstdCompress(o: { params: Record<number, number>; chunkSize: number }): Transform;
  createZstdDecompress(o: { chunkSize: number }): Transform;
}

/** Node's own zstd (22.15+, 23.8+), or undefined on Nodes without it. */
function nodeZstd(): NodeZstd | undefined {
  const z = zlib as unknown as Partial<NodeZstd>;
  return typeof z.createZstdCompress === 'function' && typeof z.createZstdDecompress === 'function' ? (z as NodeZstd) : undefined;
}

interface Napi {
  CCtx: new () => {
    setParameter(param: number, value: number): void;
    compressStream2(out: Buffer, src: Buffer, end: number): [number, number, number];
  };
  CParameter: Record<'compressionLevel' | 'checksumFlag' | 'nbWorkers', number>;
  EndDirective: Record<'continue' | 'end', number>;
  DCtx: new () => Dctx;
  ResetDirective: Record<'sessionOnly', number>;
}
interface Dctx {
  decompressStream(out: Buffer, src: Buffer): [number, number, number];
  reset(directive: number): void;
}
let napiModule: Napi | null | undefined;
let napiSearch: BindingSearch = { notLoaded: [] };
let candidates: readonly Candidate[] | undefined;

/** zstd-napi's binding where one loads (zstdnative.ts: installed, shipped, or the executable's); null otherwise. */
function napi(): Napi | null {
  if (napiModule === undefined) {
    napiSearch = findBinding(candidates ?? defaultCandidates());
    const b = napiSearch.found?.binding as Napi | undefined;
    // a file that loaded but is not zstd-napi's binding counts as one that did not load
    if (b && typeof b.CCtx !== 'function') {
      napiSearch = { notLoaded: [...napiSearch.notLoaded, `${napiSearch.found!.path} loaded but is not zstd-napi's binding`] };
    }
    napiModule = napiSearch.found ? { CCtx: b!.CCtx, CParameter: b!.CParameter, EndDirective: b!.EndDirective, DCtx: b!.DCtx, ResetDirective: b!.ResetDirective } : null;
  }
  return napiModule;
}

/**
 * Looks for zstd-napi's binding among these candidates from now on (undefined: the default places);
 * tests point it at a missing or broken file to see the fallback to Node's zlib.
 */
export function searchZstdBinding(c: readonly Candidate[] | undefined): void {
  candidates = c;
  napiModule = undefined;
  idleDctx.length = 0;
}

/** What this process's zstd is, for `tarport version` and the messages of a host without zstd. */
export interface ZstdCodecInfo {
  /** The codec zstd streams use; undefined: none (a push stores gzip layers, with a warning). */
  codec: ZstdCodec | undefined;
  /** Where zstd-napi's binary came from, when one loaded. */
  binding?: { source: BindingSource; path: string };
  /** Binaries that are there but did not load, each with why. */
  notLoaded: string[];
}

export function zstdCodecInfo(): ZstdCodecInfo {
  const have = zstdCodecs();
  const codec = preferred && have.includes(preferred) ? preferred : have[0];
  const found = napiSearch.found;
  return { codec, ...(napiModule && found ? { binding: { source: found.source, path: found.path } } : {}), notLoaded: [...napiSearch.notLoaded] };
}

/** Why no zstd-napi binary serves here, for a message that offers the alternatives; '' when none was there. */
export function zstdNotLoadedNote(): string {
  napi();
  return napiSearch.notLoaded.length ? ` (zstd-napi's binary did not load: ${napiSearch.notLoaded.join('; ')})` : '';
}

/**
 * Node's zlib reports zstd failures as errors with a code: Z_BUF_ERROR when the input ends inside a
 * frame, ZSTD_error_* for bytes that are not zstd. They reach the stream's reader as TarportErrors.
 */
function typedErrors<T extends Transform>(z: T): T {
  const destroy = z._destroy.bind(z);
  z._destroy = (e, cb) => destroy(e && zstdError(e), cb);
  return z;
}

/**
 * A fault of the zstd codec itself: bytes that are not zstd, or a stream that ends inside a frame
 * (`truncated`). The codec knows no file; the reader that does names it (tar.ts).
 */
export class CodecError extends TarportError {
  constructor(message: string, opts: { cause?: unknown; truncated?: boolean } = {}) {
    super('BAD_INPUT', message, opts);
  }
}

/** zstd's own name of the error ZSTD_error_frameParameter_windowTooLarge (lib/common/error_private.c). */
const ZSTD_WINDOW_TOO_LARGE = 'Frame requires too much memory for decoding';

function zstdError(e: Error): TarportError {
  if (e instanceof TarportError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'Z_BUF_ERROR') return truncatedFrame(e);
  // valid data whose window (zstd --long=28 and beyond) is more than the decoder may hold: the
  // bound keeps a hostile frame from taking gigabytes of memory, so the data is refused, as such.
  // The binding gives zstd's error only by its name, ZSTD_getErrorName(frameParameter_windowTooLarge)
  if (e.message.includes(ZSTD_WINDOW_TOO_LARGE)) {
    return new CodecError(`zstd: the data asks for a window larger than tarport decodes (at most 128 MiB, zstd's default: compressed with zstd --long=28 or more?); compress it again without --long, or with gzip (${e.message})`, { cause: e });
  }
  return new CodecError(`zstd: not valid zstd data (${e.message})`, { cause: e });
}

function truncatedFrame(cause?: Error): TarportError {
  return new CodecError('zstd: truncated: the stream ends in the middle of a compressed data frame', { truncated: true, ...(cause ? { cause } : {}) });
}

/**
 * zstd decompression into 1 MiB buffers, each filled across input chunks before it is passed on.
 * zstd-napi's own stream passes on 128 KiB pieces (eight times the chunks, each one more object for
 * every stream downstream and for the garbage collector) and pushes all an input chunk holds at
 * once: a megabyte of compressed zeros can hold gigabytes. This one stops when the reader is behind
 * and goes on when it asks for more, so memory stays at a few buffers whatever the ratio.
 *
 * Every buffer it passes on is fresh unless its reader gives it back with `release`: a reader that
 * is done with a buffer (it hashed or counted it, or copied what it keeps) lets the next output
 * reuse it. Fresh megabytes cost more CPU than zstd itself (page faults, cache misses: see
 * docs/install.md); a released buffer costs none. Only buffers this stream passed on, whole, are
 * taken back; a buffer is reused only after its release, never while a reader may still hold it.
 */
export class ZstdDecompress extends Duplex {
  private dctx: Dctx | undefined = idleDctx.pop() ?? new (napiOrRefuse().DCtx)();
  private out: Buffer;
  private pos = 0;
  private inFrame = false;
  /** Input not yet decompressed, and the callback that takes the next chunk once it is. */
  private src: Buffer = Buffer.alloc(0);
  private taken: ((e?: Error | null) => void) | undefined;
  /** The reader is behind: push nothing more until it asks (_read). */
  private behind = false;
  /** Output buffers: passed on lent (src/lending.ts), reused once given back. */
  private readonly pool: Lender;

  /** `outSize`: bytes per output buffer; one of them waits for the reader, then this stops. */
  constructor(private readonly outSize = OUT) {
    super({ readableHighWaterMark: outSize, writableHighWaterMark: 1 << 20 });
    this.pool = outLender(outSize);
    this.out = this.pool.take();
  }

  /** Gives back a buffer this stream passed on: its reader is done with it and keeps no view of it. */
  release(buf: Buffer): void {
    this.pool.release(buf);
  }

  /** Takes in an output buffer to reuse: one this stream's thread passed on, sent back (ThreadedZstd). */
  adopt(buf: Buffer): void {
    this.pool.adopt(buf);
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
        const room = this.outSize - this.pos;
        const [ret, produced, consumed] = this.dctx!.decompressStream(this.out.subarray(this.pos), this.src);
        this.pos += produced;
        // 0: a frame ended. A call that moved nothing (the output had just filled up) says nothing
        // about the frame: after one ends, zstd answers with the size it wants of the next one.
        if (produced > 0 || consumed > 0) this.inFrame = ret !== 0;
        this.src = this.src.subarray(consumed);
        if (this.pos === this.outSize) {
          if (!this.push(this.pool.lend(this.out))) this.behind = true;
          this.out = this.pool.take();
          this.pos = 0;
        }
        // all input taken and the output not filled: zstd needs more input
        if (this.src.length === 0 && produced < room) return take();
      }
    } catch (e) {
      take(zstdError(e as Error));
    }
  }

  override _final(cb: (e?: Error | null) => void): void {
    if (this.inFrame) {
      cb(truncatedFrame());
      return;
    }
    if (this.pos > 0) this.push(this.out.subarray(0, this.pos));
    else this.pool.adopt(this.out);
    this.retire();
    this.push(null);
    cb();
  }

  /** The context goes back for the next stream once this one is done with it (ended cleanly). */
  private retire(): void {
    const d = this.dctx;
    this.dctx = undefined;
    if (!d || idleDctx.length >= DCTX_KEPT) return;
    d.reset(napiOrRefuse().ResetDirective.sessionOnly);
    idleDctx.push(d);
  }
}

/**
 * zstd compression (level 3, a frame checksum) into 1 MiB output buffers, each filled across input
 * chunks before it is passed on; zstd-napi's own stream passes on a fresh 128 KiB buffer per call.
 * Like ZstdDecompress's, its output buffers are lent (src/lending.ts): a writer that gives one back
 * once written (a file's write callback, `releaserOf`) lets the next output reuse it.
 *
 * Its write callback runs once zstd has taken the whole chunk in (zstd copies its input into its own
 * window), so a feeder may reuse the chunk's memory then (feedFile). It is the last reader of its
 * input, so it gives back each lent input chunk then too: put it only where nothing else still
 * holds its input chunks (no tee before it).
 */
export class ZstdCompress extends Transform {
  private readonly cctx: InstanceType<Napi['CCtx']>;
  private readonly pool: Lender;
  private out: Buffer;
  private pos = 0;

  constructor(nbWorkers: number, outSize = OUT) {
    super({ readableHighWaterMark: outSize, writableHighWaterMark: 1 << 20 });
    const n = napiOrRefuse();
    this.cctx = new n.CCtx();
    this.cctx.setParameter(n.CParameter.compressionLevel, 3);
    this.cctx.setParameter(n.CParameter.checksumFlag, 1);
    this.cctx.setParameter(n.CParameter.nbWorkers, nbWorkers);
    this.pool = new Lender(outSize, COMPRESS_KEPT);
    this.out = this.pool.take();
  }

  /** Gives back a buffer this stream passed on (see ZstdDecompress.release). */
  release(buf: Buffer): void {
    this.pool.release(buf);
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    try {
      this.compress(chunk, false);
    } catch (e) {
      cb(zstdError(e as Error));
      return;
    }
    // zstd holds a copy now: a lent input chunk (feedFile's, a decompressor's output) goes back
    giveBack(chunk);
    cb();
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.compress(Buffer.alloc(0), true);
    } catch (e) {
      cb(zstdError(e as Error));
      return;
    }
    if (this.pos > 0) this.push(this.out.subarray(0, this.pos));
    cb();
  }

  /** Takes all of `src` in (and, at the end, flushes the frame), passing on each buffer it fills. */
  private compress(src: Buffer, end: boolean): void {
    const { EndDirective } = napiOrRefuse();
    for (;;) {
      const [left, produced, consumed] = this.cctx.compressStream2(this.out.subarray(this.pos), src, end ? EndDirective.end : EndDirective.continue);
      this.pos += produced;
      src = src.subarray(consumed);
      if (this.pos === this.out.length) {
        this.push(this.pool.lend(this.out));
        this.out = this.pool.take();
        this.pos = 0;
      }
      if (src.length === 0 && (!end || left === 0)) return;
    }
  }
}

function napiOrRefuse(): Napi {
  const n = napi();
  if (!n) throw new TarportError('CONFIG', 'zstd-napi is not installed beside tarport');
  return n;
}

/** The worker's file beside this module; none in a bundle (the single executable). */
function workerFile(): URL | undefined {
  try {
    const u = new URL('./zstdworker.js', import.meta.url);
    return u.protocol === 'file:' && existsSync(u) ? u : undefined;
  } catch {
    return undefined;
  }
}
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

  /**
   * Takes back the buffers this stream passed on (src/lending.ts): their memory moves back to the
   * thread, which decompresses into it again. Once the thread is gone they are left to the collector.
   */
  private readonly home = {
    release: (buf: Buffer) => {
      const ab = buf.buffer;
      if (this.gone || buf.byteOffset !== 0 || buf.byteLength !== ab.byteLength || !(ab instanceof ArrayBuffer)) return;
      this.worker.postMessage({ back: ab }, [ab]);
    },
  };
  private gone = false;

  constructor(private readonly worker: Worker) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    worker.once('exit', () => (this.gone = true));
    worker.on('message', (m: { out?: ArrayBuffer; took?: boolean; done?: boolean; error?: string; truncated?: boolean }) => {
      if (m.out) {
        if (this.push(lendOut(Buffer.from(m.out), this.home))) worker.postMessage({ credit: 1 });
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
        this.gone = true;
        void worker.terminate();
      } else if (m.error !== undefined) {
        // the thread sends what its TarportError said; the type is rebuilt here
        this.destroy(new CodecError(m.error, { truncated: m.truncated ?? false }));
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
    this.gone = true;
    void this.worker.terminate();
    cb(e);
  }
}
