import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarportError, wrapSystemError } from '../errors.js';
import { keySegments, parentOf } from './keys.js';
import { readFileInto, readableFrom } from './source.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from './types.js';

const CHUNK = 1 << 20; // 1 MiB reads: the default 64 KiB halves hashing speed downstream (LIMITS.md)

/** A local directory or a mounted stick (file:// URLs and plain paths). */
export class FileTransport implements Transport {
  readonly capabilities = { atomicRename: true, maxConnections: 4, local: true } as const;
  readonly location: string;

  constructor(readonly root: string) {
    this.location = `file://${root}`;
  }

  private path(key: string): string {
    return join(this.root, ...keySegments(key));
  }

  localPath(key: string): string {
    return this.path(key);
  }

  private folderPath(key: string): string {
    const parent = parentOf(key);
    return parent === '' ? this.root : this.path(parent);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await stat(this.path(key));
      return { name: key.slice(key.lastIndexOf('/') + 1), isDir: st.isDirectory(), size: st.size, mtime: st.mtime };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw wrapSystemError(e, `stat ${key} in ${this.location}`);
    }
  }

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    const dir = folder === '' ? this.root : this.path(folder);
    let names: import('node:fs').Dirent[];
    try {
      names = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw wrapSystemError(e, `list ${folder || '/'} in ${this.location}`);
    }
    for (const d of names) {
      if (d.isDirectory()) {
        yield { name: d.name, isDir: true, size: 0 };
      } else if (d.isFile()) {
        const st = await stat(join(dir, d.name)).catch(() => undefined);
        if (st) yield { name: d.name, isDir: false, size: st.size, mtime: st.mtime };
      }
    }
  }

  async read(key: string, opts: ReadOptions = {}): Promise<Readable> {
    const p = this.path(key);
    const fh = await open(p, 'r').catch((e: unknown) => {
      throw wrapSystemError(e, `read ${key} from ${this.location}`);
    });
    return fh.createReadStream({ start: opts.offset ?? 0, highWaterMark: CHUNK, signal: opts.signal, autoClose: true });
  }

  readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    return readFileInto(this.path(key), opts.offset ?? 0, sink, opts.signal, `read ${key} from ${this.location}`);
  }

  async write(key: string, source: Source, opts: WriteOptions = {}): Promise<{ size: number }> {
    const p = this.path(key);
    try {
      await mkdir(this.folderPath(key), { recursive: true });
    } catch (e) {
      throw wrapSystemError(e, `create folder for ${key} in ${this.location}`);
    }
    const fh = await open(p, 'w').catch((e: unknown) => {
      throw wrapSystemError(e, `write ${key} to ${this.location}`);
    });
    const out = createWriteStream('', { fd: fh.fd, highWaterMark: CHUNK, autoClose: false, flush: false });
    try {
      await pipeline(readableFrom(source, 0, `write ${key} to ${this.location}`), out, { signal: opts.signal });
      // Durable before it can be renamed into place: a stick pulled right after a publish must not
      // hold a catalog that names objects whose bytes never reached the medium.
      await fh.sync();
      await fh.close();
    } catch (e) {
      await fh.close().catch(() => undefined);
      await rm(p, { force: true }).catch(() => undefined);
      if (e instanceof TarportError) throw e;
      throw wrapSystemError(e, `write ${key} to ${this.location}`);
    }
    return { size: out.bytesWritten };
  }

  async rename(from: string, to: string): Promise<void> {
    try {
      await mkdir(this.folderPath(to), { recursive: true });
      await rename(this.path(from), this.path(to));
    } catch (e) {
      throw wrapSystemError(e, `rename ${from} to ${to} in ${this.location}`);
    }
  }

  async remove(key: string): Promise<void> {
    try {
      await rm(this.path(key), { force: true });
    } catch (e) {
      throw wrapSystemError(e, `remove ${key} from ${this.location}`);
    }
  }

  async close(): Promise<void> {}
}

