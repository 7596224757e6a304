import { Readable } from 'node:stream';
import { TarportError } from '../errors.js';
import { keySegments, parentOf } from './keys.js';
import { drainInto, readableFrom } from './source.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from './types.js';

/** An in-process store for fast tests. Passes the same contract suite as the real transports. */
export class MemoryTransport implements Transport {
  readonly capabilities = { atomicRename: true, maxConnections: 8, local: true } as const;
  readonly location: string;
  readonly files = new Map<string, Buffer>();

  constructor(name = 'test') {
    this.location = `memory://${name}`;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    keySegments(key);
    const f = this.files.get(key);
    const name = key.slice(key.lastIndexOf('/') + 1);
    if (f) return { name, isDir: false, size: f.length };
    for (const k of this.files.keys()) if (k.startsWith(key + '/')) return { name, isDir: true, size: 0 };
    return undefined;
  }

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    const prefix = folder === '' ? '' : folder + '/';
    const seen = new Set<string>();
    for (const [k, v] of [...this.files.entries()]) {
      if (!k.startsWith(prefix)) continue;
      const rest = k.slice(prefix.length);
      const slash = rest.indexOf('/');
      const name = slash < 0 ? rest : rest.slice(0, slash);
      if (seen.has(name)) continue;
      seen.add(name);
      yield slash < 0 ? { name, isDir: false, size: v.length } : { name, isDir: true, size: 0 };
    }
  }

  async read(key: string, opts: ReadOptions = {}): Promise<Readable> {
    keySegments(key);
    const f = this.files.get(key);
    if (!f) throw new TarportError('NOT_FOUND', `read ${key} from ${this.location}: not found`);
    return Readable.from([f.subarray(opts.offset ?? 0)]);
  }

  async readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    return drainInto(await this.read(key, opts), sink);
  }

  async write(key: string, source: Source, opts: WriteOptions = {}): Promise<{ size: number }> {
    keySegments(key);
    if (parentOf(key) !== '' && this.files.has(parentOf(key))) throw new TarportError('IO', `write ${key}: parent is a file`);
    const chunks: Buffer[] = [];
    for await (const c of readableFrom(source, 0, `write ${key} to ${this.location}`)) {
      opts.signal?.throwIfAborted();
      chunks.push(c as Buffer);
    }
    const data = Buffer.concat(chunks);
    this.files.set(key, data);
    return { size: data.length };
  }

  async rename(from: string, to: string): Promise<void> {
    const f = this.files.get(from);
    if (!f) throw new TarportError('NOT_FOUND', `rename ${from} in ${this.location}: not found`);
    this.files.delete(from);
    this.files.set(to, f);
  }

  async remove(key: string): Promise<void> {
    this.files.delete(key);
  }

  async close(): Promise<void> {}
}
