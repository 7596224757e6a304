import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from './types.js';
import type { Readable } from 'node:stream';

/** Counts requests and bytes that cross a transport (tests, bench, and --json statistics). */
export interface TransportCounters {
  requests: number;
  bytesRead: number;
  bytesWritten: number;
}

/** A wrapper that is a Transport too: counts what passes through it. */
export class CountingTransport implements Transport {
  readonly counters: TransportCounters = { requests: 0, bytesRead: 0, bytesWritten: 0 };

  readonly localPath?: (key: string, op: 'read' | 'write') => Promise<string>;
  // the optional parts of a local transport pass through as they are: a wrapper without them turns a
  // write's hold on its folder (a stick unplugged or swapped mid-write) into nothing
  readonly hold?: () => Promise<() => void>;
  readonly witness?: (key: () => string) => () => void;

  constructor(private readonly inner: Transport) {
    if (inner.localPath) this.localPath = (key, op) => inner.localPath!(key, op);
    if (inner.hold) this.hold = () => inner.hold!();
    if (inner.witness) this.witness = (key) => inner.witness!(key);
  }

  get location(): string {
    return this.inner.location;
  }

  get capabilities() {
    return this.inner.capabilities;
  }

  stat(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    this.counters.requests++;
    return this.inner.stat(key, signal);
  }

  async *list(folder: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    this.counters.requests++;
    yield* this.inner.list(folder, signal);
  }

  async read(key: string, opts?: ReadOptions): Promise<Readable> {
    this.counters.requests++;
    const src = await this.inner.read(key, opts);
    // Counted where the bytes enter the stream, not by a Transform behind it: no extra hop per chunk
    // (remote reads arrive in 64 KiB pieces). Every Readable, Transforms included, fills itself
    // through its own push().
    const c = this.counters;
    const push = src.push.bind(src);
    src.push = (chunk: unknown, encoding?: BufferEncoding) => {
      if (chunk !== null && chunk !== undefined) c.bytesRead += (chunk as { length: number }).length;
      return push(chunk, encoding);
    };
    return src;
  }

  readTo(key: string, sink: ByteSink, opts?: ReadOptions): Promise<number> {
    this.counters.requests++;
    const c = this.counters;
    return this.inner.readTo(
      key,
      (chunk) => {
        c.bytesRead += chunk.length;
        return sink(chunk);
      },
      opts,
    );
  }

  write(key: string, source: Source, opts?: WriteOptions): Promise<{ size: number }> {
    this.counters.requests++;
    return this.inner.write(key, source, opts).then((r) => {
      this.counters.bytesWritten += r.size;
      return r;
    });
  }

  rename(from: string, to: string, signal?: AbortSignal): Promise<void> {
    this.counters.requests++;
    return this.inner.rename(from, to, signal);
  }

  remove(key: string, signal?: AbortSignal): Promise<void> {
    this.counters.requests++;
    return this.inner.remove(key, signal);
  }

  connectEarly(): void {
    this.inner.connectEarly?.();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
