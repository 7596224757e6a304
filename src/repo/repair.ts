import { catalogLag, rebuildEntries, readCatalog, writeCatalogBytes, type Sign } from './catalog.js';
import { CATALOG_KEY } from './layout.js';
import { checkRegistryView, writeRegistryView } from './registry.js';
import type { Catalog } from './records.js';
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
 * Fixes what a crash or a lost race can leave: a catalog that is missing, behind releases/ or names
 * a missing record is rebuilt from releases/ (the truth). A signed catalog is rewritten only with
 * the signing key; without it the lag is reported (a consumer that pins keys would refuse an
 * unsigned one). A missing catalog.json whose immutable copy is current is put back as it was,
 * signature and all: that needs no key. Temporary files are gc's (they may be a publish's).
 */
export async function repairRepository(repo: Repository, opts: { ttlMs: number; sign?: Sign; signal?: AbortSignal }): Promise<RepairResult> {
  const store = storeOf(repo);
  await requireRepository(store, 'repair', opts.signal);
  const result: RepairResult = { repaired: [], needsKey: [] };
  const current = await readCatalog(store, opts.signal);
  const truth = await rebuildEntries(store, current?.catalog, opts.signal);
  const lag = catalogLag(current?.catalog, truth);
  const describe = lag.map((l) => `${l.ref}: ${l.problem === 'missing' ? 'not in the catalog' : l.problem === 'record-missing' ? 'record missing' : `catalog at v${l.catalog!.version}, releases/ at v${l.truth!.version}`}`);
  if (current && lag.length === 0 && current.from !== CATALOG_KEY) {
    const sig = await repo.readCatalogSignature(current, opts.signal);
    await writeCatalogBytes(store, current.catalog, current.bytes, sig, opts.signal);
    result.repaired.push(`${CATALOG_KEY} put back from ${current.from}`);
  }
  if (lag.length === 0 && current?.catalog.repository) {
    await repairRegistryView(store, current.catalog, result, opts.signal);
    return result;
  }
  if (!current && truth.length === 0) return result;
  const signed = current ? (await repo.readCatalogSignature(current, opts.signal)) !== undefined : false;
  if (signed && !opts.sign) {
    result.needsKey.push(...(describe.length ? describe : ['the catalog names no repository id (written by tarport 0.1)']).map((d) => `${d} (the catalog is signed: repair with --sign-key)`));
    return result;
  }
  const tx = await repo.begin(opts.signal ? { signal: opts.signal } : {});
  try {
    const { catalog } = await tx.publishCatalog({ ttlMs: opts.ttlMs, ...(opts.sign ? { sign: opts.sign } : {}) });
    result.repaired.push(...describe, `catalog rewritten at sequence ${catalog.sequence}${opts.sign ? ' (signed)' : ''}`);
  } finally {
    await tx.end();
  }
  return result;
}

/** The registry view of a current catalog, written again in whole when check finds it off (a derived file: no key needed). */
async function repairRegistryView(store: Store, catalog: Catalog, result: RepairResult, signal?: AbortSignal): Promise<void> {
  const { off } = await checkRegistryView(store, catalog, signal);
  if (off.length === 0) return;
  await writeRegistryView(store, catalog, signal, { rebuild: true });
  result.repaired.push(`registry view written again (${off.length} file${off.length === 1 ? '' : 's'} did not match the catalog)`);
}
