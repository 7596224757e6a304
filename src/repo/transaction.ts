import type { Readable } from 'node:stream';
import { sha256 } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import { convergeCatalog, writeCatalogBytes, type CatalogCopy, type Sign } from './catalog.js';
import { INDEX_FORMAT_VERSION, ensureIdentity } from './format.js';
import { PublishIntent } from './intents.js';
import { recordFileName, recordKey } from './layout.js';
import { putObject, putSmallBlob, putSplit, stageBlob, type ObjectSource, type StagedBlob } from './objects.js';
import { writeOciIndex } from './oci-index.js';
import { writeRegistryView, type RegistryView } from './registry.js';
import { isIndexRecord } from './platforms.js';
import { signatureKey } from './read.js';
import { MEDIA_TYPES, serialize, type Catalog, type CatalogEntry, type ReleaseRecord } from './records.js';
import type { Store } from './store.js';

/**
 * The write protocol of a repository, the one way push, watch and sync write (docs/repo-format.md,
 * "Write order"). A writer MUST call, in this order:
 *
 * 1. objects: `protect` every object it will reference but not write itself, before counting on it
 *    (gc spares them while the transaction lives); `stageBlob` / `putObject` / `putSplit` what the
 *    repository lacks, then `commitObjects` (protects what it wrote, renames it into place, writes
 *    small objects). No record may name an object before this step ended.
 * 2. records: `writeRecord` (signature first, then the record) or `copyRecord`.
 * 3. the catalog: `publishCatalog` (rebuilt from releases/ until a read-back agrees) or, for a
 *    sync that carries its source's catalog unchanged, `adoptCatalog`.
 * 4. derived files: index.json, the registry view (registry.ts), then every `derived` step (index.html and the like); they are
 *    rebuilt from the catalog and may lag it, never lead it.
 * 5. `end` (always, also after a failure: it withdraws the intent and removes staged objects).
 *
 * Calling a step after a later one has begun throws INTERNAL: the order is enforced, not hoped for.
 */
export class WriteTransaction {
  private phase = 0;
  private readonly staged: StagedBlob[] = [];
  /** Extra derived files (step 4), written from the final catalog. */
  readonly derived: ((catalog: Catalog, signal?: AbortSignal) => Promise<void>)[] = [];
  /** The registry view the derived step wrote (what it serves and leaves out), when it ran. */
  registryView: RegistryView | undefined;

  private constructor(
    private readonly store: Store,
    private readonly intent: PublishIntent,
    /** The repository's id (created now when it had none). */
    readonly repositoryId: string,
    private readonly signal: AbortSignal | undefined,
  ) {}

  static async begin(store: Store, opts: { signal?: AbortSignal; adoptId?: string } = {}): Promise<WriteTransaction> {
    const id = await ensureIdentity(store, opts.signal, opts.adoptId);
    const intent = await PublishIntent.open(store, opts.signal);
    return new WriteTransaction(store, intent, id, opts.signal);
  }

  private enter(phase: number, what: string): void {
    if (phase < this.phase) throw new TarportError('INTERNAL', `internal error: ${what} after a later step of the write transaction (docs/repo-format.md, "Write order")`);
    this.phase = phase;
  }

  // ---- 1. objects ------------------------------------------------------------------------------

  /** Names objects this writer will reference; returns those the repository does not hold. */
  async protect(digests: Iterable<string>): Promise<Set<string>> {
    this.enter(1, 'protect');
    return this.intent.protect(digests, this.signal);
  }

  async stageBlob(source: Readable): Promise<StagedBlob> {
    this.enter(1, 'stageBlob');
    const b = await stageBlob(this.store, source, this.signal);
    this.staged.push(b);
    return b;
  }

  /** Drops a staged blob (the repository holds the same content under another object). */
  async discard(blob: StagedBlob): Promise<void> {
    const i = this.staged.indexOf(blob);
    if (i >= 0) this.staged.splice(i, 1);
    await blob.discard();
  }

  /** Copies an object in whole (temporary name, rename). */
  async putObject(digest: string, source: ObjectSource): Promise<void> {
    this.enter(1, 'putObject');
    await this.intent.protect([digest], this.signal);
    await putObject(this.store, digest, source, this.signal);
  }

  /** Copies an object in parts of at most `maxPart` bytes. */
  async putSplit(desc: { digest: string; size: number }, open: () => Promise<Readable>, maxPart: number): Promise<void> {
    this.enter(1, 'putSplit');
    await this.intent.protect([desc.digest], this.signal);
    await putSplit(this.store, desc, open, maxPart, this.signal);
  }

  /** Makes every staged object visible, then writes the small objects (configs, manifests). */
  async commitObjects(small: readonly Buffer[] = []): Promise<void> {
    this.enter(1, 'commitObjects');
    const missing = await this.intent.protect([...this.staged.map((b) => b.digest), ...small.map((b) => sha256(b))], this.signal);
    for (const b of this.staged) {
      if (!b.uploaded && missing.has(b.digest)) {
        throw new TarportError('IO', `object ${b.digest} went from ${this.store.location} while this publish ran (gc?); publish again`);
      }
      await b.commit();
    }
    this.staged.length = 0;
    for (const b of small) await putSmallBlob(this.store, b, this.signal);
  }

  // ---- 2. records ------------------------------------------------------------------------------

  /** Writes an immutable release record (its signature first); returns its file name, digest and size. */
  async writeRecord(record: ReleaseRecord, sign?: Sign): Promise<{ file: string; digest: string; size: number; bytes: Buffer }> {
    this.enter(2, 'writeRecord');
    const bytes = serialize(record);
    const digest = sha256(bytes);
    const file = recordFileName(record.version, digest);
    const key = recordKey(record.name, record.tag, file);
    // before the record: a version-2 reader is told to update, not shown a record it calls malformed
    if (isIndexRecord(record)) await this.raiseFormat();
    if (sign) await this.store.putAtomic(signatureKey(key), await sign(bytes), this.signal);
    await this.store.putAtomic(key, bytes, this.signal);
    return { file, digest, size: bytes.length, bytes };
  }

  /** Copies a record from another repository as it is (its signature first). */
  async copyRecord(entry: CatalogEntry, bytes: Buffer, signature: Buffer | undefined): Promise<void> {
    this.enter(2, 'copyRecord');
    const key = recordKey(entry.name, entry.tag, entry.record);
    if (entry.manifest?.mediaType === MEDIA_TYPES.index) await this.raiseFormat();
    if (signature) await this.store.putAtomic(signatureKey(key), signature, this.signal);
    await this.store.putAtomic(key, bytes, this.signal);
  }

  /** Declares format version 3 (multi-platform records) before the first such record is written. */
  private async raiseFormat(): Promise<void> {
    await ensureIdentity(this.store, this.signal, undefined, INDEX_FORMAT_VERSION);
  }

  // ---- 3. catalog, 4. derived files ------------------------------------------------------------

  /** Rebuilds the catalog from releases/ until it agrees (see convergeCatalog), then the derived files. */
  async publishCatalog(opts: { ttlMs: number; sign?: Sign; minSequence?: number }): Promise<{ catalog: Catalog; wrote: boolean }> {
    this.enter(3, 'publishCatalog');
    const r = await convergeCatalog(this.store, { id: this.repositoryId, ttlMs: opts.ttlMs, ...(opts.sign ? { sign: opts.sign } : {}), ...(opts.minSequence !== undefined ? { minSequence: opts.minSequence } : {}), ...(this.signal ? { signal: this.signal } : {}) });
    if (r.wrote) await this.writeDerived(r.catalog);
    return r;
  }

  /** Writes another repository's catalog as it is, signature and all (sync of a whole repository). */
  async adoptCatalog(copy: CatalogCopy, signature: Buffer | undefined): Promise<void> {
    this.enter(3, 'adoptCatalog');
    await writeCatalogBytes(this.store, copy.catalog, copy.bytes, signature, this.signal);
    await this.writeDerived(copy.catalog);
  }

  private async writeDerived(catalog: Catalog): Promise<void> {
    this.enter(4, 'derived files');
    await writeOciIndex(this.store, catalog, this.signal);
    this.registryView = await writeRegistryView(this.store, catalog, this.signal);
    for (const step of this.derived) await step(catalog, this.signal);
  }

  /** Ends the transaction: staged objects not committed are removed, the intent is withdrawn. */
  async end(): Promise<void> {
    this.phase = 5;
    for (const b of this.staged) await b.discard();
    this.staged.length = 0;
    await this.intent.close();
  }
}
