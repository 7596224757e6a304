import type { Readable } from 'node:stream';
import { sha256 } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import { convergeCatalog, readCatalog, readCatalogSignature, writeCatalogBytes, type CatalogCopy, type Sign } from './catalog.js';
import { BASE_FORMAT_VERSION, INDEX_FORMAT_VERSION, ensureIdentity, newRepositoryId, readFormat } from './format.js';
import { PublishIntent } from './intents.js';
import { CATALOG_KEY, FORMAT_KEY, RELEASES_FOLDER, recordFileName, recordKey } from './layout.js';
import { putObject, putSmallBlob, putSplit, stageBlob, type ObjectSource, type StagedBlob } from './objects.js';
import { writeOciIndex } from './oci-index.js';
import { writeRegistryView, type RegistryView } from './registry.js';
import { isIndexRecord } from './platforms.js';
import { pageShows, writePage } from './page.js';
import { ackKey, readAcks, type Ack } from './acks.js';
import { signatureKey } from './read.js';
import { MEDIA_TYPES, serialize, type Catalog, type CatalogEntry, type ReleaseRecord } from './records.js';
import type { Store } from './store.js';

export interface BeginOptions {
  readonly signal?: AbortSignal;
  /** The id a repository this write creates takes (sync: its source's). */
  readonly adoptId?: string;
  readonly create?: boolean;
  /** Told once when the write waits for a gc that announced it may delete what it reuses (minutes). */
  readonly onWait?: (message: string) => void;
}

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
    private id: string,
    /** True while the repository is still to be created (`create`): its identity is written with the first object. */
    private unborn: boolean,
    private readonly signal: AbortSignal | undefined,
    /** Releases the hold on the location taken for this write (Store.hold). */
    private readonly release: () => void,
    /** Ends the intent's watch over the location (Store.witness): before the intent goes, so no other write in the same location misses it. */
    private readonly unwitness: () => void,
  ) {}

  /** The repository's id (for a repository this transaction creates: the one it will write). */
  get repositoryId(): string {
    return this.id;
  }

  /**
   * Begins a write. A location that holds no repository is refused (NO_REPOSITORY) before anything
   * is written, unless `create`: then the identity (`adoptId`, or a new one) is written with the
   * first thing the transaction keeps, so a write that fails before that leaves no file behind.
   */
  static async begin(store: Store, opts: BeginOptions = {}): Promise<WriteTransaction> {
    // held before the repository is looked for: every write of this transaction goes to the folder
    // found to hold it, not to an empty mount point left by a stick pulled since
    const release = await store.hold();
    try {
      // one read of the format file serves both questions for a repository that has its identity
      // (every push after the first): a round trip less per write
      const format = await readFormat(store, opts.signal);
      const state = format ? 'repository' : await repositoryState(store, opts.signal);
      if (state === 'none' && !opts.create) throw noRepository(store.location);
      const known = format?.id && format.version >= BASE_FORMAT_VERSION ? format.id : undefined;
      const id = state === 'none' ? (opts.adoptId ?? newRepositoryId()) : (known ?? (await ensureIdentity(store, opts.signal, opts.adoptId)));
      const intent = await PublishIntent.open(store, opts.signal, opts.onWait);
      // the intent, written to the folder just held, is what tells that folder from another stick
      // mounted in its place since (Store.witness)
      const unwitness = store.witness(() => intent.file);
      return new WriteTransaction(store, intent, id, state === 'none', opts.signal, release, unwitness);
    } catch (e) {
      release();
      throw e;
    }
  }

  /** Writes the identity of a repository this transaction creates (once, before anything it keeps). */
  private async bear(): Promise<void> {
    if (!this.unborn) return;
    // one write, however many objects a sync copies at once ask for it
    this.born ??= ensureIdentity(this.store, this.signal, this.id).then(
      (id) => {
        this.id = id;
        this.unborn = false;
      },
      (e: unknown) => {
        this.born = undefined; // the next object tries again
        throw e;
      },
    );
    await this.born;
  }

  private born: Promise<void> | undefined;

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
    // kept: a sync cut after its first object leaves a repository its re-run finds (and one whose
    // first copy failed leaves no identity behind)
    await this.bear();
  }

  /** Copies an object in parts of at most `maxPart` bytes. */
  async putSplit(desc: { digest: string; size: number }, open: () => Promise<Readable>, maxPart: number): Promise<void> {
    this.enter(1, 'putSplit');
    await this.intent.protect([desc.digest], this.signal);
    await putSplit(this.store, desc, open, maxPart, this.signal);
    await this.bear();
  }

  /** Makes every staged object visible, then writes the small objects (configs, manifests). */
  async commitObjects(small: readonly Buffer[] = []): Promise<void> {
    this.enter(1, 'commitObjects');
    await this.bear();
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
    await this.bear();
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
    await this.bear();
    const key = recordKey(entry.name, entry.tag, entry.record);
    if (entry.manifest?.mediaType === MEDIA_TYPES.index) await this.raiseFormat();
    if (signature) await this.store.putAtomic(signatureKey(key), signature, this.signal);
    await this.store.putAtomic(key, bytes, this.signal);
  }

  /** Declares format version 3 (multi-platform records) before the first such record is written. */
  private async raiseFormat(): Promise<void> {
    await this.bear();
    await ensureIdentity(this.store, this.signal, this.id, INDEX_FORMAT_VERSION);
  }

  /**
   * Carries other hosts' acknowledgements (sync: a stick brings the low side's back). A host's file
   * is written when this repository lacks it or holds an older one; returns how many were written.
   */
  async carryAcks(acks: readonly Ack[]): Promise<number> {
    this.enter(2, 'carryAcks');
    const { acks: have } = await readAcks(this.store, this.signal);
    let n = 0;
    for (const a of acks) {
      const mine = have.find((h) => h.host === a.host);
      if (mine && mine.updated >= a.updated) continue;
      await this.bear();
      await this.store.putAtomic(ackKey(a.host), serialize(a), this.signal);
      n++;
    }
    return n;
  }

  // ---- 3. catalog, 4. derived files ------------------------------------------------------------

  /** Rebuilds the catalog from releases/ until it agrees (see convergeCatalog), then the derived files. */
  async publishCatalog(opts: { ttlMs: number; sign?: Sign; minSequence?: number; overDamaged?: boolean }): Promise<{ catalog: Catalog; wrote: boolean; unsignedOverSigned: boolean }> {
    this.enter(3, 'publishCatalog');
    await this.bear();
    const wasSigned = opts.sign ? false : await this.signedNow();
    const r = await convergeCatalog(this.store, { id: this.repositoryId, ttlMs: opts.ttlMs, ...(opts.sign ? { sign: opts.sign } : {}), ...(opts.minSequence !== undefined ? { minSequence: opts.minSequence } : {}), ...(opts.overDamaged ? { overDamaged: true } : {}), ...(this.signal ? { signal: this.signal } : {}) });
    // a catalog found current may still be ahead of its derived files (a writer killed between them)
    if (r.wrote || !(await pageShows(this.store, r.catalog, this.signal))) await this.writeDerived(r.catalog);
    return { ...r, unsignedOverSigned: r.wrote && wasSigned };
  }

  /**
   * Writes another repository's catalog as it is, signature and all (sync of a whole repository).
   * Says whether an unsigned catalog took the place of a signed one.
   */
  async adoptCatalog(copy: CatalogCopy, signature: Buffer | undefined): Promise<{ unsignedOverSigned: boolean }> {
    this.enter(3, 'adoptCatalog');
    await this.bear();
    const wasSigned = signature ? false : await this.signedNow();
    await writeCatalogBytes(this.store, copy.catalog, copy.bytes, signature, this.signal);
    await this.writeDerived(copy.catalog);
    return { unsignedOverSigned: wasSigned };
  }

  /**
   * Whether the catalog now in place is signed: an unsigned write over it makes every consumer
   * that pins keys (--trust) refuse the whole repository, which its writer must be told.
   */
  private async signedNow(): Promise<boolean> {
    // a catalog that does not read is being replaced anyway (converged): no signature to lose
    const current = await readCatalog(this.store, this.signal).catch(() => undefined);
    return current !== undefined && (await readCatalogSignature(this.store, current, this.signal).catch(() => undefined)) !== undefined;
  }

  /**
   * Rewrites the derived files from a catalog that did not change: when what they show did
   * (`changed`: acknowledgements came), or when they lag it (a writer killed before its page).
   */
  async refreshDerived(catalog: Catalog, changed = true): Promise<void> {
    if (!changed && (await pageShows(this.store, catalog, this.signal))) return;
    await this.bear();
    await this.writeDerived(catalog);
  }

  private async writeDerived(catalog: Catalog): Promise<void> {
    this.enter(4, 'derived files');
    await writeOciIndex(this.store, catalog, this.signal);
    this.registryView = await writeRegistryView(this.store, catalog, this.signal);
    await writePage(this.store, catalog, this.signal);
    for (const step of this.derived) await step(catalog, this.signal);
  }

  /** Ends the transaction: staged objects not committed are removed, the intent is withdrawn. */
  async end(): Promise<void> {
    this.phase = 5;
    try {
      for (const b of this.staged) await b.discard();
      this.staged.length = 0;
      this.unwitness();
      await this.intent.close();
    } finally {
      this.unwitness();
      this.release();
    }
  }
}

/** What a writer says when its unsigned catalog took the place of a signed one (publishCatalog, adoptCatalog). */
export function unsignedOverSignedWarning(location: string): string {
  return `the catalog of ${location} was signed, and this write replaced it with an unsigned one: consumers that pin keys (--trust) now refuse every release in it; write again with --sign-key`;
}

/**
 * What a location holds: a repository with an identity file, one of tarport 0.1 (a catalog or
 * releases, no identity yet: the next writer gives it one), or none (an empty folder, a typo, a
 * stick that is not mounted).
 */
export async function repositoryState(store: Store, signal?: AbortSignal): Promise<'repository' | 'legacy' | 'none'> {
  if (await readFormat(store, signal)) return 'repository';
  if (await store.stat(CATALOG_KEY, signal)) return 'legacy';
  return (await store.list(RELEASES_FOLDER, signal)).length > 0 ? 'legacy' : 'none';
}

/**
 * For what reads or tends a repository (check, gc, repair): a location that holds none (a typo, a
 * stick that is not mounted, a bucket's wrong prefix) lists as empty, and must not pass for a clean,
 * empty repository with exit 0.
 */
export async function requireRepository(store: Store, what: string, signal?: AbortSignal): Promise<void> {
  if ((await repositoryState(store, signal)) === 'none') {
    throw new TarportError('NOT_FOUND', `${what} ${store.location}: it holds no tarport repository (no ${FORMAT_KEY}, no catalog, no releases): a typo, a stick or mount that is not there, or nothing was pushed yet`);
  }
}

export function noRepository(location: string): TarportError {
  // retryable: a stick mounted later holds it (watch keeps the file and tries again)
  return new TarportError('NO_REPOSITORY', `${location} holds no tarport repository (no ${FORMAT_KEY}): create one with \`tarport init ${location}\`, or pass --init to create it in this run`, { retryable: true });
}
