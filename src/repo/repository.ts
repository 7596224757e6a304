import type { Readable } from 'node:stream';
import type { ByteSink, Transport } from '../transport/index.js';
import { catalogStat, noListingIsEmpty, readCatalog, readCatalogSignature, type CatalogCopy } from './catalog.js';
import { ensureIdentity, readFormat } from './format.js';
import { CATALOGS_FOLDER, recordKey } from './layout.js';
import { CATALOG_SCHEMA_V1 } from './records.js';
import { blobInfo, listObjects, localObjectFile, readBlob, readBlobTo, readParts, readSmallBlob, type PartList } from './objects.js';
import { MAX_SIGNATURE_BYTES, listReleases, listTags, readRecord, readSignature, type CheckSignature, type PinnedRecord, type ReleaseRef, type VerifiedRecord } from './read.js';
import { Store } from './store.js';
import { ackKey, readAcks, writeAck, type Ack, type AckEntry } from './acks.js';
import { writePage } from './page.js';
import { describeRelease, type ReleaseSummary } from './describe.js';
import { TarportError, isTarportError, messageOf } from '../errors.js';
import { sha256 } from '../crypto/index.js';
import { WriteTransaction, repositoryState, requireRepository, type BeginOptions } from './transaction.js';
import { linkSignals } from '../signals.js';

const stores = new WeakMap<Repository, Store>();

/** repo/'s own access to a repository's store (not exported from index.ts). */
export function storeOf(repo: Repository): Store {
  return stores.get(repo)!;
}

/**
 * A repository (docs/repo-format.md) over any transport. Everything above repo/ reads and writes
 * through it; its transport is repo/'s own (see Store). Writes go through `begin()`.
 */
export class Repository {
  constructor(transport: Transport) {
    stores.set(this, new Store(transport));
  }

  get location(): string {
    return storeOf(this).location;
  }

  /** The bytes are on this host (a directory or a mounted stick): reading them again is cheap. */
  get isLocal(): boolean {
    return storeOf(this).transport.capabilities.local;
  }

  /** Transfers that may run at once. */
  get maxConnections(): number {
    return storeOf(this).transport.capabilities.maxConnections;
  }

  async close(): Promise<void> {
    await storeOf(this).transport.close();
  }

  /** The repository's id (undefined for a repository written by tarport 0.1 that nothing has written to since). */
  /**
   * Refuses (NOT_FOUND, naming `what` and the location) a location that holds no repository: a
   * typo or a stick not mounted lists as empty, which must not pass for an empty repository.
   */
  async require(what: string, signal?: AbortSignal): Promise<void> {
    await requireRepository(storeOf(this), what, signal);
  }

  async identity(signal?: AbortSignal): Promise<string | undefined> {
    return (await readFormat(storeOf(this), signal))?.id;
  }

  /**
   * Starts a write (see WriteTransaction for the order it enforces). A location without a
   * repository is refused (NO_REPOSITORY) unless `create`.
   */
  async begin(opts: BeginOptions = {}): Promise<WriteTransaction> {
    return WriteTransaction.begin(storeOf(this), opts);
  }

  /** `tarport init`: writes the identity of a repository when the location has none (an existing one is left as it is). */
  async init(signal?: AbortSignal): Promise<{ id: string; created: boolean }> {
    const store = storeOf(this);
    const created = (await repositoryState(store, signal)) === 'none';
    return { id: await ensureIdentity(store, signal), created };
  }

  // ---- acknowledgements ------------------------------------------------------------------------

  /** Every host's acknowledgement (files that do not parse are named in `bad`). */
  readAcks(signal?: AbortSignal): Promise<{ acks: Ack[]; bad: { file: string; problem: string }[] }> {
    return readAcks(storeOf(this), signal);
  }

  /**
   * Leaves this host's acknowledgement, then rewrites the page so that it shows it. Best effort and
   * bounded: a read-only location is not tried; a write that fails or takes longer than `timeoutMs`
   * is given up, and the reason returned (a consumer's load never fails or waits on it).
   */
  async acknowledge(host: { id: string; hostname: string }, loaded: readonly AckEntry[], opts: { timeoutMs: number; signal?: AbortSignal }): Promise<{ written: true; key: string } | { written: false; readOnly: boolean; reason: string }> {
    const store = storeOf(this);
    if (store.transport.capabilities.readOnly) return { written: false, readOnly: true, reason: `${store.location} is read-only` };
    const ctl = new AbortController();
    const link = linkSignals([opts.signal, ctl.signal]);
    const signal = link.signal;
    let timer: NodeJS.Timeout | undefined;
    // the bound holds even over a transport that does not heed the abort: the race returns in time
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        ctl.abort();
        reject(new TarportError('IO', `no answer within ${opts.timeoutMs} ms`));
      }, opts.timeoutMs);
    });
    let acked = false;
    const work = (async () => {
      await writeAck(store, host, loaded, signal);
      acked = true;
      const catalog = (await readCatalog(store, signal))?.catalog;
      if (catalog) await writePage(store, catalog, signal);
    })();
    work.catch(() => undefined);
    try {
      await Promise.race([work, late]);
      return { written: true, key: ackKey(host.id) };
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      // the page shows it from the next write on, when it could not be rewritten now
      if (acked) return { written: true, key: ackKey(host.id) };
      return { written: false, readOnly: false, reason: ctl.signal.aborted ? `no answer within ${opts.timeoutMs} ms` : messageOf(e) };
    } finally {
      clearTimeout(timer);
      late.catch(() => undefined);
      link.unlink();
    }
  }

  // ---- the catalog -----------------------------------------------------------------------------

  catalogStat(signal?: AbortSignal): Promise<{ size: number; mtime: number } | undefined> {
    return catalogStat(storeOf(this), signal);
  }

  readCatalog(signal?: AbortSignal): Promise<CatalogCopy | undefined> {
    return readCatalog(storeOf(this), signal);
  }

  /**
   * The signature of the catalog that was read (named by its content). When there is none under
   * that name but one for the same sequence, that one is returned: the catalog was changed after it
   * was signed, and the check of that signature says so ("bad signature", not "not signed").
   */
  async readCatalogSignature(copy: CatalogCopy, signal?: AbortSignal): Promise<Buffer | undefined> {
    return readCatalogSignature(storeOf(this), copy, signal);
  }

  // ---- records ---------------------------------------------------------------------------------

  readRecord(ref: ReleaseRef, pin: { digest: string; size: number }, opts?: { verify?: CheckSignature; signal?: AbortSignal }): Promise<PinnedRecord>;
  readRecord(ref: ReleaseRef, pin?: undefined, opts?: { verify?: CheckSignature; signal?: AbortSignal }): Promise<VerifiedRecord>;
  readRecord(ref: ReleaseRef, pin?: { digest: string; size: number }, opts: { verify?: CheckSignature; signal?: AbortSignal } = {}): Promise<VerifiedRecord> {
    return pin ? readRecord(storeOf(this), ref, pin, opts) : readRecord(storeOf(this), ref, undefined, opts);
  }

  /** One release as ls and the page show it (unverified; `current`: the catalog's "name:tag:record" entries). */
  describeRelease(ref: ReleaseRef, current: ReadonlySet<string>, acks: readonly Ack[], signal?: AbortSignal): Promise<ReleaseSummary> {
    return describeRelease(storeOf(this), ref, current, acks, signal);
  }

  /**
   * True when the record file of a catalog entry is here and is the one it pins (digest and size):
   * a record damaged on a stick is no "present" release, though its name is listed.
   */
  async recordIntact(entry: ReleaseRef & { digest: string; size: number }, signal?: AbortSignal): Promise<boolean> {
    const bytes = await storeOf(this)
      .readOptional(recordKey(entry.name, entry.tag, entry.record), entry.size, 'release record', signal)
      .catch((e: unknown) => {
        if (isTarportError(e, 'INTEGRITY')) return undefined; // larger than pinned
        throw e;
      });
    return bytes !== undefined && bytes.length === entry.size && sha256(bytes) === entry.digest;
  }

  readRecordSignature(ref: ReleaseRef, signal?: AbortSignal): Promise<Buffer | undefined> {
    return readSignature(storeOf(this), recordKey(ref.name, ref.tag, ref.record), signal);
  }

  listReleases(name: string, tag: string, signal?: AbortSignal): Promise<ReleaseRef[]> {
    return listReleases(storeOf(this), name, tag, signal);
  }

  listTags(signal?: AbortSignal): Promise<{ name: string; tag: string }[]> {
    return listTags(storeOf(this), signal);
  }

  // ---- objects ---------------------------------------------------------------------------------

  blobInfo(digest: string, signal?: AbortSignal): Promise<{ size: number; split?: boolean } | undefined> {
    return blobInfo(storeOf(this), digest, signal);
  }

  readParts(digest: string, signal?: AbortSignal): Promise<PartList | undefined> {
    return readParts(storeOf(this), digest, signal);
  }

  readBlob(desc: { digest: string; size: number }, opts: { offset?: number; signal?: AbortSignal; verify?: boolean } = {}): Promise<Readable> {
    return readBlob(storeOf(this), desc, opts);
  }

  readBlobTo(desc: { digest: string; size: number }, sink: ByteSink, opts: { offset?: number; signal?: AbortSignal } = {}): Promise<number> {
    return readBlobTo(storeOf(this), desc, sink, opts);
  }

  readSmallBlob(desc: { digest: string; size: number }, what: string, signal?: AbortSignal): Promise<Buffer> {
    return readSmallBlob(storeOf(this), desc, what, signal);
  }

  /** The local file of an object stored whole on this host (sync copies between local stores). */
  localObjectFile(digest: string, signal?: AbortSignal): Promise<string | undefined> {
    return localObjectFile(storeOf(this), digest, signal);
  }

  /** True when objects can be written straight to local files (see ObjectSource). */
  get writesLocalFiles(): boolean {
    return storeOf(this).transport.localPath !== undefined;
  }

  listObjects(signal?: AbortSignal): Promise<string[]> {
    return listObjects(storeOf(this), signal);
  }
}
