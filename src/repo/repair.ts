import { isTarportError } from '../errors.js';
import { catalogLag, highestWrittenSequence, newestReadableCopy, rebuildEntries, readCatalog, writeCatalogBytes, type CatalogCopy, type Sign } from './catalog.js';
import { CATALOG_KEY, recordKey } from './layout.js';
import { signatureKey } from './read.js';
import { checkRegistryView, writeRegistryView } from './registry.js';
import type { Catalog, CatalogEntry } from './records.js';
import { storeOf, type Repository } from './repository.js';
import type { Store } from './store.js';
import { requireRepository } from './transaction.js';

export interface RepairResult {
  /** What was done. */
  repaired: string[];
  /** What is wrong but needs the signing key (--sign-key) to fix. */
  needsKey: string[];
}

/**
 * Fixes what a crash or a lost race can leave: a catalog that is missing, does not read, is behind
 * releases/ or names a missing record is rebuilt from releases/ (the truth). A signed repository's
 * catalog (its catalog signed, or, where no catalog reads, its newest records) is rewritten only with
 * the signing key; without it the lag is reported (a consumer that pins keys would refuse an
 * unsigned one). A catalog.json that is missing or does not read is put back from the newest copy in
 * catalogs/, signature and all, when that copy reads and is current: that needs no key; an older
 * copy is never put back (consumers saw the newer one). With the key, a current catalog that is not
 * signed, in a repository whose releases are, is signed again. Temporary files are gc's.
 */
export async function repairRepository(repo: Repository, opts: { ttlMs: number; sign?: Sign; signal?: AbortSignal }): Promise<RepairResult> {
  const store = storeOf(repo);
  await requireRepository(store, 'repair', opts.signal);
  const result: RepairResult = { repaired: [], needsKey: [] };
  const { copy: current, damaged } = await currentCatalog(store, opts.signal);
  const truth = await rebuildEntries(store, current?.catalog, opts.signal);
  const lag = catalogLag(current?.catalog, truth);
  const describe = lag.map((l) => `${l.ref}: ${l.problem === 'missing' ? 'not in the catalog' : l.problem === 'record-missing' ? 'record missing' : `catalog at v${l.catalog!.version}, releases/ at v${l.truth!.version}`}`);
  const said = damaged ? [damaged] : [];
  // catalog.json holds the current catalog: it read, or is put back now from the newest copy
  let inPlace = current?.from === CATALOG_KEY;
  if (current && !inPlace && lag.length === 0 && (await isNewestCopy(store, current, opts.signal))) {
    const sig = await repo.readCatalogSignature(current, opts.signal);
    await writeCatalogBytes(store, current.catalog, current.bytes, sig, opts.signal);
    result.repaired.push(...said.splice(0), `${CATALOG_KEY} put back from ${current.from}`);
    inPlace = true;
  }
  const catalogSigned = current ? (await repo.readCatalogSignature(current, opts.signal)) !== undefined : false;
  const resign = !!opts.sign && inPlace && !catalogSigned && lag.length === 0 && (await anySigned(store, truth, opts.signal));
  if (current && inPlace && lag.length === 0 && current.catalog.repository && !resign) {
    await repairRegistryView(store, current.catalog, result, opts.signal);
    return result;
  }
  if (!current && truth.length === 0 && !damaged) return result;
  const signed = catalogSigned || (!current && (await anySigned(store, truth, opts.signal)));
  if (signed && !opts.sign) {
    const why = catalogSigned ? 'the catalog is signed' : 'its releases are signed';
    const what = [...said, ...describe];
    result.needsKey.push(...(what.length ? what : ['the catalog names no repository id (written by tarport 0.1)']).map((d) => `${d} (${why}: repair with --sign-key)`));
    return result;
  }
  const tx = await repo.begin(opts.signal ? { signal: opts.signal } : {});
  try {
    const { catalog } = await tx.publishCatalog({ ttlMs: opts.ttlMs, overDamaged: true, ...(opts.sign ? { sign: opts.sign } : {}), ...(resign ? { minSequence: current!.catalog.sequence } : {}) });
    if (resign) result.repaired.push('the catalog was not signed, where the releases are');
    result.repaired.push(...said, ...describe, `catalog rewritten at sequence ${catalog.sequence}${opts.sign ? ' (signed)' : ''}`);
  } finally {
    await tx.end();
  }
  return result;
}

/** Whether `copy` (from catalogs/) is of the highest sequence written there: only that one may stand in for catalog.json. */
async function isNewestCopy(store: Store, copy: CatalogCopy, signal?: AbortSignal): Promise<boolean> {
  return copy.catalog.sequence >= (await highestWrittenSequence(store, signal));
}

/**
 * The current catalog. A catalog.json that does not read (damaged: not JSON, not a catalog) gives
 * way to the newest copy in catalogs/ that reads, or none, and is named (`damaged`): what `check`
 * sends here to repair, repair must get past.
 */
async function currentCatalog(store: Store, signal?: AbortSignal): Promise<{ copy: CatalogCopy | undefined; damaged?: string }> {
  try {
    return { copy: await readCatalog(store, signal) };
  } catch (e) {
    if (!isTarportError(e, 'INTEGRITY')) throw e;
    return { copy: await newestReadableCopy(store, signal), damaged: e.message };
  }
}

/** Whether any tag's newest release is signed (its record has a signature beside it). */
async function anySigned(store: Store, truth: readonly CatalogEntry[], signal?: AbortSignal): Promise<boolean> {
  for (const e of truth) if (await store.stat(signatureKey(recordKey(e.name, e.tag, e.record)), signal)) return true;
  return false;
}

/** The registry view of a current catalog, written again in whole when check finds it off (a derived file: no key needed). */
async function repairRegistryView(store: Store, catalog: Catalog, result: RepairResult, signal?: AbortSignal): Promise<void> {
  const { off } = await checkRegistryView(store, catalog, signal);
  if (off.length === 0) return;
  await writeRegistryView(store, catalog, signal, { rebuild: true });
  result.repaired.push(`registry view written again (${off.length} file${off.length === 1 ? '' : 's'} did not match the catalog)`);
}
