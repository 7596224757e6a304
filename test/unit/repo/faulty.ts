import type { Readable } from 'node:stream';
import { TarportError } from '../../../src/errors.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from '../../../src/transport/index.js';

/**
 * A Transport around another that (a) counts the operations that change the store (write, rename,
 * remove) and, from the `failAt`-th on, makes every operation fail as a process killed there would
 * (with `once`, only that one fails: a failed upload); (b) waits `delayMs` before each operation, so
 * that concurrent writers interleave; (c) reports every file as old (mtime 1970), the hard case
 * for gc. The wrapped store keeps what was done before the fault.
 */
export class FaultyTransport implements Transport {
  mutations = 0;
  /** Every change, in order: "write KEY", "rename FROM TO", "remove KEY". */
  readonly log: string[] = [];
  failAt = Infinity;
  once = false;
  private dead = false;
  readonly capabilities;

  constructor(
    readonly inner: Transport,
    private readonly delayMs = 0,
    atomicRename = inner.capabilities.atomicRename,
    local = inner.capabilities.local,
  ) {
    this.capabilities = { ...inner.capabilities, atomicRename, local };
  }

  get location(): string {
    return this.inner.location;
  }

  private async gate(mutates: boolean, what = ''): Promise<void> {
    if (mutates) this.log.push(what);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, Math.random() * this.delayMs));
    if (this.dead) throw new TarportError('IO', 'injected fault: the process is gone');
    if (!mutates) return;
    this.mutations++;
    if (this.mutations === this.failAt) {
      if (!this.once) this.dead = true;
      throw new TarportError('IO', `injected fault at change ${this.mutations}`);
    }
  }

  async stat(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    await this.gate(false);
    const st = await this.inner.stat(key, signal);
    return st && { ...st, mtime: new Date(0) };
  }

  async *list(folder: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    await this.gate(false);
    for await (const e of this.inner.list(folder, signal)) yield { ...e, mtime: new Date(0) };
  }

  async read(key: string, opts?: ReadOptions): Promise<Readable> {
    await this.gate(false);
    return this.inner.read(key, opts);
  }

  async readTo(key: string, sink: ByteSink, opts?: ReadOptions): Promise<number> {
    await this.gate(false);
    return this.inner.readTo(key, sink, opts);
  }

  async write(key: string, source: Source, opts?: WriteOptions): Promise<{ size: number }> {
    await this.gate(true, `write ${key}`);
    return this.inner.write(key, source, opts);
  }

  async rename(from: string, to: string, signal?: AbortSignal): Promise<void> {
    await this.gate(true, `rename ${from} ${to}`);
    if (!this.capabilities.atomicRename && (await this.inner.stat(to))) {
      // delete-then-rename, as FTP servers without rename-over do: a fault can fall between the two
      await this.inner.remove(to);
      await this.gate(true, `rename (second step) ${from} ${to}`);
    }
    return this.inner.rename(from, to, signal);
  }

  async remove(key: string, signal?: AbortSignal): Promise<void> {
    await this.gate(true, `remove ${key}`);
    return this.inner.remove(key, signal);
  }

  async close(): Promise<void> {}
}
