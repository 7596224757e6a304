import { sha256 } from '../crypto/index.js';
import { TarportError, isTarportError } from '../errors.js';
import { ListingUnavailableError } from '../transport/index.js';
import { CATALOGS_FOLDER, CATALOG_KEY, LEGACY_CATALOG_SIGNATURE_KEY, MAX_CATALOG_BYTES, catalogFileName, parseCatalogFileName } from './layout.js';
import { readFormat } from './format.js';
import { listReleases, listTags, readRecord, readSignatureFile, unreadableRecord } from './read.js';
import { CATALOG_SCHEMA, CATALOG_SCHEMA_V1, CatalogSchema, compareReleases, parseWith, serialize, type Catalog, type CatalogEntry, type ReleaseRecord } from './records.js';
import type { Store } from './store.js';

// The catalog: a cache of releases/ that makes polling cheap (docs/repo-format.md, "Catalog").

export { MAX_CATALOG_BYTES } from './layout.js';

/** Signs bytes (a record, the catalog): returns a detached armored signature. Injected by the caller. */
export interface Sign {
  (data: Buffer): Promise<Buffer>;
  /**
   * The fingerprint its signatures name as their issuer (SigningKey.signsAs): a publish tells by it
   * whether the current release of a tag was signed by this key or by another.
   */
  readonly fingerprint: string;
  /**
   * Whether `signature` is one this key made over `data`, checked with its public half: a claimed
   * issuer alone is not (a damaged signature file can name the key and still fail every consumer's
   * check, and "unchanged" would keep it so for good).
   */
  readonly verifies: (data: Buffer, signature: Buffer) => Promise<boolean>;
}

/** A catalog as read, with where its signature lies (named by its content: never another catalog's). */
export interface CatalogCopy {
  readonly catalog: Catalog;
  readonly bytes: Buffer;
  readonly signatureKey: string;
  /** The key it was read from: catalog.json, or an immutable copy when catalog.json was missing. */
  readonly from: string;
}

export function catalogEntryOf(record: ReleaseRecord, file: string, digest: string, size: number): CatalogEntry {
  return {
    name: record.name,
    tag: record.tag,
    version: record.version,
    kind: record.kind,
    created: record.created,
    record: file,
    digest,
    size,
    ...(record.manifest ? { manifest: record.manifest } : {}),
  };
}

/**
 * The immutable catalog copies, oldest first. A server that lists no folder (a mirror without
 * autoindex) has none to offer: readers then go without the fallback (pull needs no listing).
 */
export async function listCatalogFiles(store: Store, signal?: AbortSignal): Promise<string[]> {
  return (await store.list(CATALOGS_FOLDER, signal).catch(noListingIsEmpty))
    .filter((e) => !e.isDir && parseCatalogFileName(e.name))
    .map((e) => e.name)
    .sort();
}

/**
 * The current catalog, or undefined when the repository has none. catalog.json is read first (one
 * request); when it is missing — a writer on a transport whose rename-over is delete-then-rename
 * stopped between the two steps — the newest immutable copy in tarport/catalogs/ stands in for it.
 */
export async function readCatalog(store: Store, signal?: AbortSignal): Promise<CatalogCopy | undefined> {
  // catalog.json is replaced while others read it; a read that straddled a replacement (a resumed
  // remote read reopens the path) parses as garbage: it is read again before it counts as broken.
  // Only a parse failure is retried: an oversized or endless catalog fails at once, at the cap.
  for (let attempt = 0; ; attempt++) {
    const got = await readCatalogBytes(store, signal);
    if (!got) return undefined;
    try {
      return parseCatalog(store, got.bytes, got.from);
    } catch (e) {
      if (attempt >= 2 || !isTarportError(e, 'INTEGRITY') || got.from !== CATALOG_KEY) throw e;
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 300));
    }
  }
}

async function readCatalogBytes(store: Store, signal?: AbortSignal): Promise<{ bytes: Buffer; from: string } | undefined> {
  const bytes = await store.readOptional(CATALOG_KEY, MAX_CATALOG_BYTES, 'catalog', signal);
  if (bytes) return { bytes, from: CATALOG_KEY };
  const newest = (await listCatalogFiles(store, signal)).at(-1);
  if (!newest) return undefined;
  const from = `${CATALOGS_FOLDER}/${newest}`;
  const copy = await store.readOptional(from, MAX_CATALOG_BYTES, 'catalog', signal);
  return copy ? { bytes: copy, from } : undefined;
}

/** The highest sequence of any catalog written to tarport/catalogs/ (0: none), read or not. */
export async function highestWrittenSequence(store: Store, signal?: AbortSignal): Promise<number> {
  return (await listCatalogFiles(store, signal)).reduce((n, f) => Math.max(n, parseCatalogFileName(f)!.sequence), 0);
}

/**
 * The newest copy in tarport/catalogs/ that reads (repair, when catalog.json itself does not): a
 * copy that is damaged too is passed over for the one before it. Undefined when none reads.
 */
export async function newestReadableCopy(store: Store, signal?: AbortSignal): Promise<CatalogCopy | undefined> {
  for (const name of (await listCatalogFiles(store, signal)).reverse()) {
    const from = `${CATALOGS_FOLDER}/${name}`;
    try {
      const bytes = await store.readOptional(from, MAX_CATALOG_BYTES, 'catalog', signal);
      if (bytes) return parseCatalog(store, bytes, from);
    } catch (e) {
      if (!isTarportError(e, 'INTEGRITY')) throw e;
    }
  }
  return undefined;
}

function parseCatalog(store: Store, bytes: Buffer, from: string): CatalogCopy {
  const catalog = parseWith(CatalogSchema, bytes, `catalog ${from} of ${store.location}`);
  if (catalog.schema === CATALOG_SCHEMA && !catalog.repository) throw new TarportError('INTEGRITY', `catalog ${from} of ${store.location} names no repository`);
  const signatureKey = catalog.schema === CATALOG_SCHEMA_V1 ? LEGACY_CATALOG_SIGNATURE_KEY : `${CATALOGS_FOLDER}/${catalogFileName(catalog.sequence, sha256(bytes))}.asc`;
  return { catalog, bytes, signatureKey, from };
}

/**
 * The detached signature of a catalog copy: its own `.asc`, or (a catalog put back from its
 * immutable copy) that of the copy in catalogs/ with the same sequence. Undefined when unsigned.
 */
export async function readCatalogSignature(store: Store, copy: CatalogCopy, signal?: AbortSignal): Promise<Buffer | undefined> {
  const sig = await readSignatureFile(store, copy.signatureKey, 'signature of the catalog', signal);
  if (sig || copy.catalog.schema === CATALOG_SCHEMA_V1) return sig;
  const prefix = `${String(copy.catalog.sequence).padStart(12, '0')}-`;
  const other = (await store.list(CATALOGS_FOLDER, signal).catch(noListingIsEmpty)).find((e) => e.name.startsWith(prefix) && e.name.endsWith('.json.asc'));
  return other ? readSignatureFile(store, `${CATALOGS_FOLDER}/${other.name}`, 'signature of the catalog', signal) : undefined;
}

/** Size and modification time of the catalog: one small request, for cheap polling. */
export async function catalogStat(store: Store, signal?: AbortSignal): Promise<{ size: number; mtime: number } | undefined> {
  let st = await store.stat(CATALOG_KEY, signal);
  if (!st) {
    const newest = (await listCatalogFiles(store, signal)).at(-1);
    if (newest) st = await store.stat(`${CATALOGS_FOLDER}/${newest}`, signal);
  }
  return st && !st.isDir ? { size: st.size, mtime: st.mtime?.getTime() ?? 0 } : undefined;
}

/**
 * Writes a catalog: its signature, then its immutable copy (tarport/catalogs/<sequence>-<digest>.json),
 * then catalog.json. The signature is named by the catalog's content, so no reader ever finds a
 * catalog beside the signature of another; a reader that finds no catalog.json uses the newest copy.
 */
export async function writeCatalog(store: Store, catalog: Catalog, sign?: Sign, signal?: AbortSignal): Promise<CatalogCopy> {
  const bytes = serialize(catalog);
  return writeCatalogBytes(store, catalog, bytes, sign ? await sign(bytes) : undefined, signal);
}

/** Writes a catalog's bytes as they are (a sync carries its source's signed catalog unchanged). */
export async function writeCatalogBytes(store: Store, catalog: Catalog, bytes: Buffer, signature: Buffer | undefined, signal?: AbortSignal): Promise<CatalogCopy> {
  if (catalog.schema === CATALOG_SCHEMA_V1) {
    // a tarport 0.1 catalog keeps its 0.1 place (its signature beside it, written right after)
    await store.putAtomic(CATALOG_KEY, bytes, signal);
    if (signature) await store.putAtomic(LEGACY_CATALOG_SIGNATURE_KEY, signature, signal);
    else await store.remove(LEGACY_CATALOG_SIGNATURE_KEY, signal);
    return { catalog, bytes, signatureKey: LEGACY_CATALOG_SIGNATURE_KEY, from: CATALOG_KEY };
  }
  const file = `${CATALOGS_FOLDER}/${catalogFileName(catalog.sequence, sha256(bytes))}`;
  if (signature) await store.putAtomic(`${file}.asc`, signature, signal);
  await store.putAtomic(file, bytes, signal);
  await store.putAtomic(CATALOG_KEY, bytes, signal);
  // a tarport 0.1 signature would lie beside a catalog it does not sign
  if (await store.stat(LEGACY_CATALOG_SIGNATURE_KEY, signal)) await store.remove(LEGACY_CATALOG_SIGNATURE_KEY, signal);
  return { catalog, bytes, signatureKey: `${file}.asc`, from: CATALOG_KEY };
}

/** The newest readable release of a tag as a catalog entry (a broken newest record is passed over). */
async function newestEntry(store: Store, name: string, tag: string, cached: CatalogEntry | undefined, signal?: AbortSignal): Promise<CatalogEntry | undefined> {
  const refs = await listReleases(store, name, tag, signal);
  for (const ref of refs.reverse()) {
    if (cached?.record === ref.record) return cached;
    try {
      const r = await readRecord(store, ref, undefined, { ...(signal ? { signal } : {}) });
      return catalogEntryOf(r.record, ref.record, r.digest, r.bytes.length);
    } catch (e) {
      // a damaged record is check's to report; the tag's truth is the newest record that reads. A
      // record that could not be read (a dropped link) may be the newest: the catalog waits for it
      if (signal?.aborted || !unreadableRecord(e)) throw e;
    }
  }
  return undefined;
}

/**
 * The current entry of every tag, rebuilt from releases/ (the truth): the last record in the total
 * order. `current` spares reading records the catalog already names.
 */
export async function rebuildEntries(store: Store, current: Catalog | undefined, signal?: AbortSignal): Promise<CatalogEntry[]> {
  const out: CatalogEntry[] = [];
  for (const { name, tag } of await listTags(store, signal)) {
    const cached = current?.releases.find((e) => e.name === name && e.tag === tag);
    const e = await newestEntry(store, name, tag, cached, signal);
    if (e) out.push(e);
  }
  return out.sort((a, b) => (a.name + ':' + a.tag < b.name + ':' + b.tag ? -1 : a.name + ':' + a.tag > b.name + ':' + b.tag ? 1 : 0));
}

/** Where a catalog and releases/ disagree, per tag (for check, repair and the converging writer). */
export interface CatalogLag {
  readonly ref: string;
  readonly problem: 'missing' | 'behind' | 'record-missing' | 'ahead';
  readonly catalog?: CatalogEntry;
  readonly truth?: CatalogEntry;
}

export function catalogLag(catalog: Catalog | undefined, truth: readonly CatalogEntry[]): CatalogLag[] {
  const out: CatalogLag[] = [];
  const entries = catalog?.releases ?? [];
  for (const t of truth) {
    const c = entries.find((e) => e.name === t.name && e.tag === t.tag);
    const ref = `${t.name}:${t.tag}`;
    if (!c) out.push({ ref, problem: 'missing', truth: t });
    else if (c.record !== t.record) out.push({ ref, problem: compareReleases(c, t) < 0 ? 'behind' : 'ahead', catalog: c, truth: t });
  }
  for (const c of entries) {
    if (!truth.some((t) => t.name === c.name && t.tag === c.tag)) out.push({ ref: `${c.name}:${c.tag}`, problem: 'record-missing', catalog: c });
  }
  return out;
}

export interface ConvergeOptions {
  /** The repository's id, written into the catalog (covered by its signature). */
  readonly id: string;
  readonly ttlMs: number;
  readonly sign?: Sign;
  /** The catalog's sequence is at least this + 1 (a sync destination follows its source). */
  readonly minSequence?: number;
  /** repair: a current catalog that does not read counts as none, and the one written takes its place. */
  readonly overDamaged?: boolean;
  readonly signal?: AbortSignal;
}

const MAX_CONVERGE_ROUNDS = 12;

/**
 * Makes the catalog name the newest release of every tag in releases/, and returns once a read
 * after the last write found it so. Every writer ends with such a check, so once the writers end,
 * the last check of all saw every record and no write came after it: the catalog converges on
 * servers with no lock and no exclusive create (FTP). Writes only when something differs.
 */
export async function convergeCatalog(store: Store, opts: ConvergeOptions): Promise<{ catalog: Catalog; wrote: boolean }> {
  let wrote = false;
  for (let round = 0; round < MAX_CONVERGE_ROUNDS; round++) {
    // two writers that created an id at once on a new repository: format.json's survivor wins
    const id = (await readFormat(store, opts.signal))?.id ?? opts.id;
    const current = await readCatalog(store, opts.signal).catch((e: unknown) => {
      if (opts.overDamaged && isTarportError(e, 'INTEGRITY')) return undefined;
      throw e;
    });
    const truth = await rebuildEntries(store, current?.catalog, opts.signal);
    const seqOk = (current?.catalog.sequence ?? 0) > (opts.minSequence ?? -1);
    if (current && current.catalog.repository === id && seqOk && catalogLag(current.catalog, truth).length === 0) {
      return { catalog: current.catalog, wrote };
    }
    const now = new Date();
    // past every copy in catalogs/ too: a catalog.json put back from an older copy (a restore, an
    // old stick's) must not make the next catalog repeat a sequence, which consumers that saw the
    // higher one take for a replay
    const written = await highestWrittenSequence(store, opts.signal);
    const sequence = Math.max(current?.catalog.sequence ?? 0, opts.minSequence ?? 0, written) + 1;
    if (!Number.isSafeInteger(sequence)) {
      // past 2^53 - 1 a sequence no longer grows by one in JSON numbers: no reader could order it
      throw new TarportError('INTEGRITY', `the catalog of ${store.location} is at sequence ${current?.catalog.sequence}, the largest a catalog can count to; nothing was written (a repository that got there was written by something other than tarport)`);
    }
    const catalog: Catalog = {
      schema: CATALOG_SCHEMA,
      repository: id,
      sequence,
      created: now.toISOString(),
      expires: new Date(now.getTime() + opts.ttlMs).toISOString(),
      releases: truth,
    };
    await writeCatalog(store, catalog, opts.sign, opts.signal);
    wrote = true;
    // let a racing writer's rename land before we look again; more patience each round
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 60 * (round + 1)));
  }
  throw new TarportError('IO', `the catalog of ${store.location} kept changing under us for ${MAX_CONVERGE_ROUNDS} rounds (other producers?); run 'tarport repair ${store.location}' once they end`);
}

/** A listing the server does not offer, as an empty one (for fallbacks only: see ListingUnavailableError). */
export function noListingIsEmpty(e: unknown): never[] {
  if (e instanceof ListingUnavailableError) return [];
  throw e;
}
