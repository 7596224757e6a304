import { Readable } from 'node:stream';
import { TarportError, isTarportError } from '../errors.js';
import type { ObjectInfo, Transport } from '../transport/index.js';
import { tempKeyFor } from './layout.js';

/**
 * The repository's own handle on its transport. Only modules of repo/ hold one (index.ts does not
 * export it): everything above repo/ goes through Repository's operations, so the write order
 * lives in one place (transaction.ts).
 */
export class Store {
  constructor(readonly transport: Transport) {}

  get location(): string {
    return this.transport.location;
  }

  /** Holds the location for a write (Transport.hold); a no-op where the transport has no such notion. */
  async hold(): Promise<() => void> {
    return (await this.transport.hold?.()) ?? (() => undefined);
  }

  /** Within a hold: the file `key()` names must stay there while the write lasts (Transport.witness). */
  witness(key: () => string): () => void {
    return this.transport.witness?.(key) ?? (() => undefined);
  }

  /** True when putAtomic replaces a key's file in one step: a rename that does, or one atomic write (S3). */
  get replacesAtomically(): boolean {
    return this.transport.capabilities.atomicRename || this.transport.capabilities.atomicWrite === true;
  }

  /** True when rename replaces its target in one step (docs/repo-format.md, "Renames"). */
  get atomicRename(): boolean {
    return this.transport.capabilities.atomicRename;
  }

  async readSmall(key: string, limit: number, what: string, signal?: AbortSignal): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let n = 0;
    const stream = await this.transport.read(key, { signal });
    for await (const c of stream) {
      n += (c as Buffer).length;
      if (n > limit) {
        stream.destroy();
        throw new TarportError('INTEGRITY', `${what} in ${this.location} is larger than the ${limit} bytes allowed`);
      }
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  }

  /** Like readSmall, but undefined when the key does not exist. */
  async readOptional(key: string, limit: number, what: string, signal?: AbortSignal): Promise<Buffer | undefined> {
    try {
      return await this.readSmall(key, limit, what, signal);
    } catch (e) {
      if (isTarportError(e, 'NOT_FOUND')) return undefined;
      throw e;
    }
  }

  /**
   * Writes bytes to a key atomically: a temporary name in the same folder, then a rename; or in
   * place where one write is atomic already (S3: one PUT), which spares a copy and a delete.
   */
  async putAtomic(key: string, bytes: Buffer, signal?: AbortSignal): Promise<void> {
    if (this.transport.capabilities.atomicWrite) {
      await this.transport.write(key, () => Readable.from([bytes]), { signal });
      return;
    }
    const tmp = tempKeyFor(key);
    try {
      await this.transport.write(tmp, () => Readable.from([bytes]), { signal });
      await this.transport.rename(tmp, key, signal);
    } catch (e) {
      await this.transport.remove(tmp).catch(() => undefined);
      throw e;
    }
  }

  async stat(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    return this.transport.stat(key, signal);
  }

  /** Every entry of a folder (an empty list for a missing folder). */
  async list(folder: string, signal?: AbortSignal): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    for await (const e of this.transport.list(folder, signal)) out.push(e);
    return out;
  }

  async remove(key: string, signal?: AbortSignal): Promise<void> {
    await this.transport.remove(key, signal);
  }
}
