import { open, stat, type FileHandle } from 'node:fs/promises';
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarportError, messageOf, wrapSystemError } from '../errors.js';
import { DecompressionBombError, MAX_RATIO, bombGuard } from './bomb.js';
import { CodecError, decompressor, foreignCompression, releaserOf, sniffCompression, type Compression } from './compression.js';
import { feedFile } from './filefeed.js';
import { HeaderDecoder, TarFormatError, isTarHeader, isZeroBlock, type EntryType } from './tarheader.js';
import { linkSignals } from '../signals.js';

export interface TarEntry {
  /** Normalized name (no leading './'). */
  readonly name: string;
  readonly type: EntryType;
  readonly size: number;
  readonly linkname: string;
  /** Offset of the data in the (decompressed) tar stream. */
  readonly offset: number;
}

const CHUNK = 1 << 20;
/** Entries at most this big are kept in memory while a compressed archive is indexed. */
const SMALL_ENTRY = 1 << 20;
/** …up to this much in all (named limit: an archive of many small files must not fill memory). */
const SMALL_TOTAL = 32 << 20;
/** Metadata entries read into memory (manifests, configs) are refused beyond this size. */
export const MAX_METADATA = 16 << 20;

/**
 * A tar archive on disk, plain or gzip/zstd compressed, indexed once by one decoder (tarheader.ts).
 * A plain archive is indexed by seeking from header to header and its entries are read by range; a
 * compressed one is indexed in one decompressing pass (small metadata entries kept) and its large
 * entries are cut out of a second pass by their offsets. Names that leave the archive's root, entries
 * beneath a symbolic link, oversized or endless extended headers and decompression bombs are refused
 * while indexing; what only an image archive must not hold is in `shape` (checked by image.ts).
 */
export class TarArchive {
  private constructor(
    readonly path: string,
    readonly compression: Compression,
    readonly entries: ReadonlyMap<string, TarEntry>,
    /** Entry names in archive order. */
    readonly order: readonly string[],
    private readonly small: ReadonlyMap<string, Buffer>,
    readonly fileSize: number,
    readonly shape: ArchiveShape,
    /** How many times its size a compressed archive may expand (bombGuard; 0: no limit). */
    private readonly maxExpansion: number,
  ) {}

  static async open(path: string, signal?: AbortSignal, maxExpansion = MAX_RATIO): Promise<TarArchive> {
    let size: number;
    try {
      const st = await stat(path);
      if (st.isFIFO() || st.isCharacterDevice() || st.isSocket()) {
        // an archive is read more than once (index, then layers): a pipe is read through push -
        throw new TarportError('BAD_INPUT', `${path}: a pipe or device, not a file; pipe an archive into 'tarport push -' (docker save IMAGE | tarport push - --to URL)`);
      }
      if (!st.isFile()) throw new TarportError('BAD_INPUT', `${path}: not a regular file`);
      size = st.size;
    } catch (e) {
      throw wrapSystemError(e, `open archive ${path}`);
    }
    if (size === 0) throw new TarportError('BAD_INPUT', `${path}: empty file, not an archive`);
    const fh = await open(path, 'r');
    try {
      const head = Buffer.alloc(512);
      await fh.read(head, 0, 512, 0);
      const compression = sniffCompression(head);
      const foreign = compression === 'none' ? foreignCompression(head) : undefined;
      // a tar starts with a file name: these magic numbers are no tar header (a name of 'BZh' has NULs after it)
      if (foreign && !isTarHeader(head)) {
        throw new TarportError('BAD_INPUT', `${path}: ${foreign.article} ${foreign.name}-compressed archive; tarport reads plain, gzip and zstd archives: decompress it first (${foreign.undo}), or compress it with gzip or zstd`);
      }
      const r = compression === 'none' ? await indexPlain(fh, size, path, signal) : await indexCompressed(path, compression, maxExpansion, signal);
      return new TarArchive(path, compression, r.entries, r.order, r.small, size, r.shape, maxExpansion);
    } finally {
      await fh.close();
    }
  }

  /** Reads a whole (small) entry into memory; refuses entries larger than `limit`. */
  async readEntry(name: string, limit = MAX_METADATA): Promise<Buffer> {
    const e = this.entries.get(name);
    if (!e) throw new TarportError('BAD_INPUT', `${this.path}: no entry ${JSON.stringify(name)}`);
    if (e.size > limit) {
      throw new TarportError('BAD_INPUT', `${this.path}: entry ${name} is ${e.size} bytes, more than the ${limit} allowed for metadata`);
    }
    const kept = this.small.get(name);
    if (kept) return kept;
    const chunks: Buffer[] = [];
    for await (const { stream } of this.streamEntries([name])) {
      for await (const c of stream) chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  }

  /** True when entries can be opened independently (and in parallel). */
  get seekable(): boolean {
    return this.compression === 'none';
  }

  /** Opens one entry of a plain archive by range. */
  openEntry(name: string): Readable {
    const e = this.entries.get(name);
    if (!e || !this.seekable) throw new TarportError('INTERNAL', `internal error: cannot open ${name} by range`);
    if (e.size === 0) return new PassThrough().end();
    // read into lent buffers that the last reader gives back (a compressor, a file: src/lending.ts),
    // not into a fresh megabyte per read as createReadStream does; a fault destroys the stream
    const out = new PassThrough({ highWaterMark: CHUNK });
    feedFile(this.path, out, { start: e.offset, length: e.size, chunk: CHUNK, lend: true }).catch(() => undefined);
    return out;
  }

  /**
   * Yields the named file entries in archive order, each as a stream that must be consumed before
   * the next is requested. Plain archives open each by range; compressed ones take one decompressing
   * pass that stops after the last one.
   */
  async *streamEntries(names: Iterable<string>, signal?: AbortSignal): AsyncGenerator<{ entry: TarEntry; stream: Readable }> {
    const wanted = new Set(names);
    const list = this.order.map((n) => this.entries.get(n)!).filter((e) => wanted.has(e.name) && e.type === 'file');
    if (this.seekable) {
      for (const entry of list) yield { entry, stream: this.openEntry(entry.name) };
      return;
    }
    const stop = new AbortController();
    // A failed pass fails every entry not yet read, before any reader holds them: unheard, their
    // 'error' would end the process. The fault stays on each stream, and one not yet handed out is
    // not handed out: the fault is thrown here instead.
    const streams = list.map(() => new PassThrough({ highWaterMark: CHUNK }).on('error', () => undefined));
    const link = linkSignals([signal, stop.signal]);
    const pump = this.cutRanges(list, streams, link.signal);
    try {
      for (const [i, entry] of list.entries()) {
        const failed = streams[i]!.errored;
        if (failed) throw failed;
        yield { entry, stream: streams[i]! };
      }
    } finally {
      stop.abort();
      for (const s of streams) if (!s.writableEnded) s.destroy();
      link.unlink(); // aborted with stop already: nothing more to follow
      await pump;
    }
  }

  /** One decompressing pass that writes each entry's bytes (by offset) into its stream. */
  private async cutRanges(list: readonly TarEntry[], streams: readonly PassThrough[], signal: AbortSignal): Promise<void> {
    const guard = bombGuard(this.maxExpansion);
    let i = 0;
    let pos = 0;
    const fill = async (source: AsyncIterable<Buffer>): Promise<void> => {
      for await (const chunk of source) {
        for (let at = 0; i < list.length; ) {
          const e = list[i]!;
          const from = Math.max(e.offset, pos + at);
          const to = Math.min(e.offset + e.size, pos + chunk.length);
          if (from < to) await writeOrStop(streams[i]!, chunk.subarray(from - pos, to - pos));
          if (pos + chunk.length < e.offset + e.size) break;
          streams[i++]!.end();
          at = Math.max(at, to - pos);
        }
        pos += chunk.length;
        if (i === list.length) return;
      }
      throw truncated(this.path, `the ${this.compression} stream ends before entry ${JSON.stringify(list[i]?.name)}`);
    };
    try {
      if (list.length === 0) return;
      const dec = decompressor(this.compression);
      await Promise.all([feedFile(this.path, dec, { signal, onChunk: guard.countInput }), pipeline(dec, guard.output, fill, { signal })]);
    } catch (e) {
      if (signal.aborted && i >= list.length) return;
      const err = e instanceof TarportError ? e : new TarportError('BAD_INPUT', `${this.path}: ${messageOf(e)}`, { cause: e });
      for (const s of streams.slice(i)) s.destroy(err);
    }
  }
}

/** Writes a slice with back-pressure; fails when the reader gave up on the stream. */
async function writeOrStop(s: PassThrough, b: Buffer): Promise<void> {
  if (s.destroyed) throw new Error('entry stream closed by its reader');
  if (s.write(b)) return;
  await new Promise<void>((res, rej) => {
    const done = () => {
      s.off('drain', done);
      s.off('close', closed);
      res();
    };
    const closed = () => {
      s.off('drain', done);
      rej(new Error('entry stream closed by its reader'));
    };
    s.once('drain', done);
    s.once('close', closed);
  });
}

/** Reads a tar stream block by block: by seeking in a plain file, or from a decompressed stream. */
interface BlockReader {
  /** Bytes of the (decompressed) tar stream consumed so far. */
  readonly pos: number;
  /** Exactly `n` bytes (valid until the next call), or undefined when the input ends first. */
  read(n: number): Promise<Buffer | undefined>;
  /** Skips `n` bytes; false when the input ends first. */
  skip(n: number): Promise<boolean>;
}

/** A plain archive on disk: headers are read through a window, data is skipped by seeking. */
class FileBlocks implements BlockReader {
  pos = 0;
  private winStart = 0;
  private win: Buffer = Buffer.alloc(0);

  constructor(
    private readonly fh: FileHandle,
    private readonly size: number,
  ) {}

  async read(n: number): Promise<Buffer | undefined> {
    if (this.pos + n > this.size) return undefined;
    if (this.pos < this.winStart || this.pos + n > this.winStart + this.win.length) {
      // headers of small files sit close together: one read serves many of them
      const buf = Buffer.allocUnsafe(Math.min(Math.max(n, CHUNK), this.size - this.pos));
      const { bytesRead } = await this.fh.read(buf, 0, buf.length, this.pos);
      if (bytesRead < n) return undefined;
      this.winStart = this.pos;
      this.win = buf.subarray(0, bytesRead);
    }
    const at = this.pos - this.winStart;
    this.pos += n;
    return this.win.subarray(at, at + n);
  }

  async skip(n: number): Promise<boolean> {
    if (this.pos + n > this.size) return false;
    this.pos += n;
    return true;
  }
}

/** A decompressed stream, consumed once, in order. */
class StreamBlocks implements BlockReader {
  pos = 0;
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;

  /** The chunk `buf` views, given back to the decompressor (`release`) once nothing views it. */
  private chunk: Buffer | undefined;

  /**
   * `release`: given each chunk once this reader is done with it. A block that read() returned is
   * valid until the next read() or skip() (scan copies what it keeps).
   */
  constructor(
    private readonly chunks: AsyncIterator<Buffer>,
    private readonly release?: (b: Buffer) => void,
  ) {}

  private async more(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.chunks.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    // the rest of the last chunk is copied into the new buf (or there is none): it is done with
    const last = this.chunk;
    this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    this.chunk = this.buf === r.value ? r.value : undefined;
    if (last && this.release) this.release(last);
    if (!this.chunk && this.release) this.release(r.value);
    return true;
  }

  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) if (!(await this.more())) return undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.pos += n;
    return out;
  }

  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      if (this.buf.length === 0 && !(await this.more())) return false;
      const take = Math.min(n, this.buf.length);
      this.buf = this.buf.subarray(take);
      this.pos += take;
      n -= take;
    }
    return true;
  }

  /** Reads to the end of the stream; false when more than `max` bytes are left. */
  async drain(max: number): Promise<boolean> {
    let left = this.buf.length;
    this.buf = Buffer.alloc(0);
    while (left <= max) {
      const r = await this.chunks.next();
      if (r.done) return true;
      left += r.value.length;
    }
    return false;
  }
}

/** What a scan found, beside the entries: what an image archive must not hold. */
export interface ArchiveShape {
  /** Entries in the archive (all of them, indexed or not). */
  readonly entryCount: number;
  /** More entries than MAX_INDEXED: only a root file system (imported whole) can be that big. */
  readonly overflow: boolean;
  /** The first name that two entries share (one of them not a folder). */
  readonly duplicate?: string;
  /** The first name that two entries share, folders included (the import of Docker's classic store refuses any). */
  readonly repeated?: string;
  /** The first entry that is no file, folder or link (device, FIFO, sparse file, unknown type). */
  readonly unusual?: { readonly name: string; readonly what: string };
}

/** Entries kept in the index; an archive with more is indexed no further (see ArchiveShape.overflow). */
export const MAX_INDEXED = 65_536;
/** Symbolic links remembered to refuse entries beneath them (a root file system has thousands). */
const MAX_LINKS = 262_144;
/** Names an image archive is recognized by: kept even past MAX_INDEXED. */
const LANDMARKS = new Set(['manifest.json', 'index.json', 'oci-layout', 'repositories']);
/** Bytes of a compressed stream accepted after the tar end-of-archive marker (tools pad to 10 KiB). */
const MAX_TRAILER = 1 << 20;

const PLAIN_TYPES: ReadonlySet<EntryType> = new Set(['file', 'dir', 'symlink', 'hardlink']);

/** Builds the index while the archive is scanned; refuses entries beneath a symbolic link. */
class IndexBuilder {
  readonly entries = new Map<string, TarEntry>();
  readonly order: string[] = [];
  private readonly links = new Set<string>();
  count = 0;
  overflow = false;
  duplicate: string | undefined;
  repeated: string | undefined;
  unusual: { name: string; what: string } | undefined;

  /** Adds an entry; true when it is in the index. */
  add(e: TarEntry, sparse: boolean): boolean {
    this.count++;
    this.beneathLink(e.name, 'entry');
    if (e.type === 'hardlink') this.beneathLink(e.linkname, `hard link ${JSON.stringify(e.name)} -> target`);
    if (e.type === 'symlink') {
      if (this.links.size >= MAX_LINKS) throw new TarFormatError(`more than ${MAX_LINKS} symbolic links`);
      this.links.add(e.name);
    }
    if (!this.unusual && (sparse || !PLAIN_TYPES.has(e.type))) {
      this.unusual = { name: e.name, what: sparse ? 'a sparse file' : `a ${e.type === 'other' ? 'special entry' : e.type}` };
    }
    const prev = this.entries.get(e.name);
    if (prev) {
      this.repeated ??= e.name;
      if (!this.duplicate && (prev.type !== 'dir' || e.type !== 'dir')) this.duplicate = e.name;
      return false;
    }
    if (this.entries.size >= MAX_INDEXED && !LANDMARKS.has(e.name)) {
      this.overflow = true;
      return false;
    }
    this.entries.set(e.name, e);
    this.order.push(e.name);
    return true;
  }

  private beneathLink(name: string, what: string): void {
    if (this.links.size === 0) return;
    for (let i = name.indexOf('/'); i > 0; i = name.indexOf('/', i + 1)) {
      const parent = name.slice(0, i);
      if (this.links.has(parent)) throw new TarFormatError(`${what} ${JSON.stringify(name)} lies beneath the symbolic link ${JSON.stringify(parent)}: it would be written wherever that link points`);
    }
  }

  shape(): ArchiveShape {
    return {
      entryCount: this.count,
      overflow: this.overflow,
      ...(this.duplicate !== undefined ? { duplicate: this.duplicate } : {}),
      ...(this.repeated !== undefined ? { repeated: this.repeated } : {}),
      ...(this.unusual ? { unusual: this.unusual } : {}),
    };
  }
}

interface ScanResult {
  readonly entries: Map<string, TarEntry>;
  readonly order: string[];
  readonly small: Map<string, Buffer>;
  readonly shape: ArchiveShape;
  /** The end-of-archive marker was found (else the input ended first). */
  readonly ended: boolean;
}

/** An input that ends before the archive does: maybe still being written. */
function truncated(path: string, what: string): TarportError {
  return new TarportError('BAD_INPUT', `${path}: truncated: ${what}`, { truncated: true });
}

/**
 * The one tar scan, for plain and compressed archives alike: header after header, data skipped
 * (or kept, for the small metadata entries of a compressed archive). Yields to the event loop at
 * every read and stops when `signal` fires.
 */
async function scan(r: BlockReader, path: string, keepSmall: boolean, signal?: AbortSignal): Promise<ScanResult> {
  const decoder = new HeaderDecoder();
  const index = new IndexBuilder();
  const small = new Map<string, Buffer>();
  let kept = 0;
  for (let n = 0; ; n++) {
    if (signal?.aborted) throw abortError(signal, path);
    const at = r.pos;
    const block = await r.read(512);
    if (!block) {
      if (n === 0) throw new TarportError('BAD_INPUT', `${path}: not a tar archive (too short)`);
      return { entries: index.entries, order: index.order, small, shape: index.shape(), ended: false };
    }
    if (isZeroBlock(block)) return { entries: index.entries, order: index.order, small, shape: index.shape(), ended: true };
    let step;
    try {
      step = decoder.header(block);
      if (step.meta) {
        const data = await r.read(step.size);
        if (!data) throw truncated(path, `an extended header at byte ${at} needs ${step.size} bytes`);
        decoder.meta(data);
        if (!(await r.skip(pad(step.size)))) throw truncated(path, `the archive ends inside an extended header at byte ${at}`);
        continue;
      }
    } catch (e) {
      if (!(e instanceof TarFormatError)) throw e;
      const where = n === 0 ? 'not a tar archive' : `bad tar header at byte ${at}`;
      throw new TarportError('BAD_INPUT', `${path}: ${where}: ${e.message}`, { cause: e });
    }
    const d = step.entry;
    const entry: TarEntry = { name: d.name, type: d.type, size: d.size, linkname: d.linkname, offset: r.pos };
    let inIndex = false;
    try {
      inIndex = d.name !== '' && index.add(entry, d.sparse);
    } catch (e) {
      if (!(e instanceof TarFormatError)) throw e;
      throw new TarportError('BAD_INPUT', `${path}: ${e.message}`, { cause: e });
    }
    if (inIndex && keepSmall && d.type === 'file' && !d.sparse && d.size <= SMALL_ENTRY && kept + d.size <= SMALL_TOTAL && d.name.split('/').length <= 3) {
      const data = await r.read(d.size);
      if (!data) throw truncated(path, `entry ${JSON.stringify(d.name)} needs ${d.size} bytes at offset ${entry.offset}`);
      small.set(d.name, Buffer.from(data));
      kept += d.size;
      if (!(await r.skip(pad(d.size)))) throw truncated(path, `the archive ends after entry ${JSON.stringify(d.name)}`);
    } else if (!(await r.skip(d.size + pad(d.size)))) {
      throw truncated(path, `entry ${JSON.stringify(d.name)} needs ${d.size} bytes at offset ${entry.offset}, more than the archive holds`);
    }
  }
}

const pad = (size: number) => (512 - (size % 512)) % 512;

function abortError(signal: AbortSignal, path: string): TarportError {
  const reason: unknown = signal.reason;
  return reason instanceof TarportError ? reason : new TarportError('ABORTED', `${path}: indexing interrupted`, { cause: reason });
}

async function indexPlain(fh: FileHandle, fileSize: number, path: string, signal?: AbortSignal) {
  const result = await scan(new FileBlocks(fh, fileSize), path, false, signal);
  if (!result.ended) throw truncated(path, 'the archive ends without the tar end-of-archive marker');
  return result;
}

async function indexCompressed(path: string, compression: Compression, maxExpansion: number, signal?: AbortSignal) {
  const dec = decompressor(compression);
  const guard = bombGuard(maxExpansion);
  const feeding = feedFile(path, dec, { ...(signal ? { signal } : {}), onChunk: guard.countInput });
  const piping = Promise.all([feeding, pipeline(dec, guard.output, { signal })]);
  // scan copies what it keeps of a block, so each chunk goes back to the decompressor once passed
  const reader = new StreamBlocks(guard.output[Symbol.asyncIterator](), releaserOf(dec));
  try {
    const result = await scan(reader, path, true, signal);
    if (!result.ended) throw truncated(path, 'the archive ends without the tar end-of-archive marker');
    if (!(await reader.drain(MAX_TRAILER))) {
      throw new TarportError('BAD_INPUT', `${path}: more than ${MAX_TRAILER} bytes follow the tar end-of-archive marker inside the ${compression} stream`);
    }
    await piping;
    return result;
  } catch (e) {
    dec.destroy();
    await piping.catch(() => undefined);
    throw compressedFault(e, path, compression, dec);
  }
}

/** Names what went wrong while a compressed archive was read. */
function compressedFault(e: unknown, path: string, compression: Compression, dec: Duplex): TarportError {
  // the zstd codec's errors are typed (CodecError, `truncated`) but know no file: they get its name here
  if (e instanceof CodecError) {
    return new TarportError('BAD_INPUT', `${path}: ${e.truncated ? 'truncated' : 'not a readable'} ${compression} archive (${e.message})`, { cause: e, truncated: e.truncated });
  }
  if (e instanceof TarportError) return e;
  if (e instanceof DecompressionBombError) return new TarportError('BAD_INPUT', `${path}: ${e.message}`, { cause: e });
  if ((e as { name?: unknown } | undefined)?.name === 'AbortError') return new TarportError('ABORTED', `${path}: indexing interrupted`, { cause: e });
  // zlib says what it is (Z_BUF_ERROR: the input ended); zstd fails only once its input has ended
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const ended = compression === 'gzip' ? code === 'Z_BUF_ERROR' : dec.writableEnded;
  if (ended) return new TarportError('BAD_INPUT', `${path}: truncated ${compression} archive (${messageOf(e)})`, { cause: e, truncated: true });
  return new TarportError('BAD_INPUT', `${path}: not a readable ${compression}-compressed tar archive (${messageOf(e)})`, { cause: e });
}
