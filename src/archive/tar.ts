import { createReadStream } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tarStream from 'tar-stream';
import { TarportError, messageOf, wrapSystemError } from '../errors.js';
import { decompressor, sniffCompression, type Compression } from './compression.js';
import {
  TarFormatError,
  decodeHeader,
  decodePax,
  entryType,
  isZeroBlock,
  normalizeName,
  type EntryType,
} from './tarheader.js';

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
 * A tar archive on disk, plain or gzip/zstd compressed, indexed once. A plain archive is indexed by
 * seeking from header to header and its entries are read by range; a compressed one is indexed in one
 * decompressing pass (small entries kept) and its large entries are read in a second pass.
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
  ) {}

  static async open(path: string, signal?: AbortSignal): Promise<TarArchive> {
    let size: number;
    try {
      const st = await stat(path);
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
      if (compression === 'none') {
        const { entries, order } = await indexPlain(fh, size, path);
        return new TarArchive(path, 'none', entries, order, new Map(), size);
      }
      const { entries, order, small } = await indexCompressed(path, compression, signal);
      return new TarArchive(path, compression, entries, order, small, size);
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
    return createReadStream(this.path, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: CHUNK });
  }

  /**
   * Yields the named entries in archive order, each as a stream that must be consumed before the
   * next is requested. Plain archives open each by range; compressed ones take one decompressing pass.
   */
  async *streamEntries(names: Iterable<string>, signal?: AbortSignal): AsyncGenerator<{ entry: TarEntry; stream: Readable }> {
    const wanted = new Set(names);
    if (this.seekable) {
      for (const n of this.order) {
        if (!wanted.has(n)) continue;
        yield { entry: this.entries.get(n)!, stream: this.openEntry(n) };
      }
      return;
    }
    const extract = tarStream.extract();
    const src = createReadStream(this.path, { highWaterMark: CHUNK });
    const piping = pipeline(src, decompressor(this.compression), extract, { signal }).catch((e: unknown) => {
      extract.destroy(e as Error);
    });
    let remaining = wanted.size;
    try {
      for await (const ent of extract) {
        const name = normalizeName(ent.header.name);
        const entry = this.entries.get(name);
        if (remaining > 0 && entry && wanted.has(name) && entry.type === 'file') {
          wanted.delete(name);
          remaining--;
          yield { entry, stream: Readable.from(ent, { objectMode: false, highWaterMark: CHUNK }) };
        }
        ent.resume();
        if (remaining === 0) break;
      }
    } catch (e) {
      throw new TarportError('BAD_INPUT', `${this.path}: ${messageOf(e)}`, { cause: e });
    } finally {
      src.destroy();
      await piping;
    }
  }
}

async function indexPlain(fh: FileHandle, fileSize: number, path: string) {
  const entries = new Map<string, TarEntry>();
  const order: string[] = [];
  // A read window: headers of small files sit close together, so one read serves many of them.
  let winStart = -1;
  let win = Buffer.alloc(0);
  const block = async (pos: number, len: number): Promise<Buffer> => {
    if (pos < winStart || pos + len > winStart + win.length) {
      const want = Math.max(len, 256 << 10);
      const buf = Buffer.alloc(Math.min(want, Math.max(len, fileSize - pos)));
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      winStart = pos;
      win = buf.subarray(0, bytesRead);
      if (bytesRead < len) return win;
    }
    return win.subarray(pos - winStart, pos - winStart + len);
  };
  let pos = 0;
  let pax: Record<string, string> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  let sawEnd = false;
  while (pos + 512 <= fileSize) {
    const hdr = await block(pos, 512);
    if (isZeroBlock(hdr)) {
      sawEnd = true;
      break;
    }
    let h;
    try {
      h = decodeHeader(hdr);
    } catch (e) {
      const what = pos === 0 ? 'not a tar archive' : `corrupt tar header at byte ${pos}`;
      throw new TarportError('BAD_INPUT', `${path}: ${what} (${(e as TarFormatError).message})`);
    }
    const dataStart = pos + 512;
    const padded = Math.ceil(h.size / 512) * 512;
    if (dataStart + h.size > fileSize) {
      throw new TarportError('BAD_INPUT', `${path}: truncated: entry ${JSON.stringify(h.name)} needs ${h.size} bytes at offset ${dataStart} but the file has ${fileSize}`, { truncated: true });
    }
    if (h.typeflag === 'x' || h.typeflag === 'L' || h.typeflag === 'K') {
      if (h.size > MAX_METADATA) throw new TarportError('BAD_INPUT', `${path}: extended header of ${h.size} bytes at offset ${pos}`);
      const data = Buffer.from(await block(dataStart, h.size));
      if (h.typeflag === 'x') pax = decodePax(data);
      else if (h.typeflag === 'L') longName = data.toString('utf8').replace(/\0.*$/s, '');
      else longLink = data.toString('utf8').replace(/\0.*$/s, '');
    } else if (h.typeflag === 'g') {
      // global pax header: nothing we use
    } else {
      const size = pax.size !== undefined ? Number(pax.size) : h.size;
      const name = normalizeName(pax.path ?? longName ?? h.name);
      const linkname = pax.linkpath ?? longLink ?? h.linkname;
      const realPadded = Math.ceil(size / 512) * 512;
      if (dataStart + size > fileSize) {
        throw new TarportError('BAD_INPUT', `${path}: truncated: entry ${JSON.stringify(name)} needs ${size} bytes at offset ${dataStart} but the file has ${fileSize}`, { truncated: true });
      }
      if (name !== '') {
        if (!entries.has(name)) order.push(name);
        entries.set(name, { name, type: entryType(h.typeflag), size, linkname, offset: dataStart });
      }
      pax = {};
      longName = undefined;
      longLink = undefined;
      pos = dataStart + realPadded;
      continue;
    }
    pos = dataStart + padded;
  }
  if (!sawEnd) {
    if (entries.size === 0 && pos === 0) throw new TarportError('BAD_INPUT', `${path}: not a tar archive (too short)`);
    throw new TarportError('BAD_INPUT', `${path}: truncated: the archive ends without the tar end-of-archive marker`, { truncated: true });
  }
  return { entries, order };
}

async function indexCompressed(path: string, compression: Compression, signal?: AbortSignal) {
  const entries = new Map<string, TarEntry>();
  const order: string[] = [];
  const small = new Map<string, Buffer>();
  let keptBytes = 0;
  let offset = 0;
  // The last 1 KiB of the decompressed stream: a complete tar ends in zero blocks.
  let tail = Buffer.alloc(0);
  let total = 0;
  const counter = new PassThrough({ highWaterMark: CHUNK });
  counter.on('data', (c: Buffer) => {
    total += c.length;
    tail = Buffer.concat([tail, c.subarray(Math.max(0, c.length - 1024))]).subarray(-1024);
  });
  const extract = tarStream.extract();
  const done = pipeline(createReadStream(path, { highWaterMark: CHUNK }), decompressor(compression), counter, extract, { signal });
  try {
    const iterate = (async () => {
      for await (const ent of extract) {
        const h = ent.header;
        const name = normalizeName(h.name);
        const type: EntryType =
          h.type === 'file' || h.type === 'contiguous-file'
            ? 'file'
            : h.type === 'directory'
              ? 'dir'
              : h.type === 'symlink'
                ? 'symlink'
                : h.type === 'link'
                  ? 'hardlink'
                  : 'other';
        const size = h.size ?? 0;
        if (name !== '') {
          if (!entries.has(name)) order.push(name);
          entries.set(name, { name, type, size, linkname: h.linkname ?? '', offset });
        }
        offset += size;
        if (type === 'file' && size <= SMALL_ENTRY && keptBytes + size <= SMALL_TOTAL) {
          const chunks: Buffer[] = [];
          for await (const c of ent) chunks.push(c as Buffer);
          small.set(name, Buffer.concat(chunks));
          keptBytes += size;
        } else {
          ent.resume();
          await new Promise<void>((res, rej) => {
            ent.on('end', res);
            ent.on('error', rej);
          });
        }
      }
    })();
    await Promise.all([done, iterate]);
  } catch (e) {
    // the zstd codec's errors are typed (BAD_INPUT, `truncated`): they get the file's name here
    if (e instanceof TarportError && e.code === 'BAD_INPUT') {
      throw new TarportError('BAD_INPUT', `${path}: ${e.truncated ? 'truncated' : 'not a readable'} ${compression} archive (${e.message})`, { cause: e, truncated: e.truncated });
    }
    if (e instanceof TarportError) throw e;
    const msg = messageOf(e);
    if (/unexpected end|ended in middle|Unexpected end of data/i.test(msg)) {
      throw new TarportError('BAD_INPUT', `${path}: truncated ${compression} archive (${msg})`, { cause: e, truncated: true });
    }
    throw new TarportError('BAD_INPUT', `${path}: not a readable ${compression}-compressed tar archive (${msg})`, { cause: e });
  }
  if (entries.size === 0) throw new TarportError('BAD_INPUT', `${path}: ${compression}-compressed, but not a tar archive`);
  if (total < 1024 || !tail.every((b) => b === 0)) {
    throw new TarportError('BAD_INPUT', `${path}: truncated: the archive ends without the tar end-of-archive marker`, { truncated: true });
  }
  return { entries, order, small };
}
