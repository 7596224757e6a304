import { DigestCheck } from '../crypto/index.js';
import { isTarportError, messageOf } from '../errors.js';
import { catalogLag, rebuildEntries, readCatalog, type CatalogCopy } from './catalog.js';
import { readFormat } from './format.js';
import { findTempFiles } from './gc.js';
import { holds, listPending } from './intents.js';
import { readAcks } from './acks.js';
import { CATALOG_KEY, FORMAT_KEY, recordKey } from './layout.js';
import { readBlobTo } from './objects.js';
import { checkRegistryView } from './registry.js';
import { listReleases, listTags, readRecord, unreadableRecord, type CheckSignature } from './read.js';
import type { ReleaseRecord } from './records.js';
import { recordObjects } from './platforms.js';
import { storeOf, type Repository } from './repository.js';
import type { Store } from './store.js';
import { requireRepository } from './transaction.js';

export interface Fault {
  readonly what: string;
  readonly problem: string;
}

export interface CheckResult {
  releases: number;
  objects: number;
  bytes: number;
  /** What a consumer would trip over, or what hides a release from it (exit 3). */
  faults: Fault[];
  /** What costs space or time but hides and breaks nothing (temporary files, expired intents). */
  warnings: Fault[];
}

type Report = (what: string, problem: string) => void;

/**
 * Reports `e` as a fault of the repository when it is one (bad bytes or signature, a file missing:
 * unreadableRecord's kinds, a fault with no code, and on a repository on this host's disk or stick
 * any read error: a bad sector is the medium's damage); a fault of the way to a remote one (the link
 * dropped, a read refused, a cancel) ends the check instead: a network outage in a long check is
 * exit 1, not a list of false faults and exit 3.
 */
function faultOrThrow(fault: Report, what: string, e: unknown, local: boolean): void {
  const code = (e as { code?: unknown }).code;
  if (code !== undefined && !unreadableRecord(e) && !(local && code === 'IO')) throw e;
  fault(what, messageOf(e));
}

/** The catalog: present, signed when asked, not expired, naming this repository. */
async function checkCatalog(repo: Repository, store: Store, verify: CheckSignature | undefined, fault: Report, warn: Report, signal?: AbortSignal): Promise<CatalogCopy | undefined> {
  let got: CatalogCopy | undefined;
  try {
    got = await readCatalog(store, signal);
    if (!got) return undefined;
    if (got.from !== CATALOG_KEY) {
      const why = store.atomicRename ? 'removed by hand?' : 'a write stopped between removing the old one and renaming the new one into place';
      fault(CATALOG_KEY, `missing (${why}); readers use ${got.from} meanwhile; run 'tarport repair'`);
    }
    if (verify) await verify(got.bytes, await repo.readCatalogSignature(got, signal), 'catalog').catch((e: unknown) => faultOrThrow(fault, CATALOG_KEY, e, store.transport.capabilities.local));
    if (Date.parse(got.catalog.expires) < Date.now()) fault(CATALOG_KEY, `expired at ${got.catalog.expires}`);
    const id = (await readFormat(store, signal))?.id;
    if (got.catalog.repository && id && got.catalog.repository !== id) fault(CATALOG_KEY, `names repository ${got.catalog.repository}, but tarport/format.json says ${id}`);
    if (got.catalog.repository && !id) warn(FORMAT_KEY, `missing: the repository's identity (${got.catalog.repository}, which the catalog names) is written again from the catalog by the next push or sync`);
  } catch (e) {
    faultOrThrow(fault, CATALOG_KEY, e, store.transport.capabilities.local);
  }
  return got;
}

/** Every tag's newest release must be what the catalog names; every entry's record must exist. */
async function checkConvergence(store: Store, first: CatalogCopy | undefined, fault: Report, waitMs: number, signal?: AbortSignal): Promise<void> {
  let got = first;
  let truth = await rebuildEntries(store, got?.catalog, signal);
  // a publish under way (its intent holds) writes its records, then its catalog: a lag seen in
  // between is looked at again until that catalog came, or the publish is gone, or for waitMs
  for (const until = Date.now() + waitMs; got && catalogLag(got.catalog, truth).length > 0 && Date.now() < until; ) {
    if (!(await listPending(store, 'intent', signal)).some(holds)) break;
    await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, until - Date.now()))));
    got = (await readCatalog(store, signal)) ?? got;
    truth = await rebuildEntries(store, got.catalog, signal);
  }
  if (!got && truth.length > 0) fault(CATALOG_KEY, `missing while releases/ holds ${truth.length} tag(s); run 'tarport repair'`);
  if (!got) return;
  for (const lag of catalogLag(got.catalog, truth)) {
    const t = lag.truth;
    const c = lag.catalog;
    if (lag.problem === 'missing') fault(lag.ref, `v${t!.version} (${t!.record}) is in releases/ but not in the catalog: consumers do not see it; run 'tarport repair'`);
    else if (lag.problem === 'behind') fault(lag.ref, `the catalog names v${c!.version}, releases/ holds the newer v${t!.version} (${t!.record}): consumers do not see it; run 'tarport repair'`);
    else if (lag.problem === 'record-missing') fault(lag.ref, `the catalog names v${c!.version} (${c!.record}), whose record is missing; run 'tarport repair'`);
    else fault(lag.ref, `the catalog names v${c!.version} (${c!.record}), but the newest readable record is v${t!.version}`);
  }
}

/** How long a catalog lag is looked at again while a publish is under way (a killed one's intent holds 30 min). */
const LAG_WAIT_MS = 30_000;

export interface CheckOptions {
  readonly verify?: CheckSignature;
  readonly signal?: AbortSignal;
  /** LAG_WAIT_MS, for tests. */
  readonly lagWaitMs?: number;
  /** Each fault as it is found: a check that a dropped link ends later has said what it found. */
  readonly onFault?: (f: { what: string; problem: string }) => void;
}

/**
 * Verifies a whole repository: the catalog and its pins, that it names every tag's newest release,
 * every record (name, path, digest, and its signature when `verify` is given), and every object a
 * record names (present, right size, right digest, parts included). Reads every byte once.
 */
export async function checkRepository(repo: Repository, opts: CheckOptions = {}): Promise<CheckResult> {
  const store = storeOf(repo);
  await requireRepository(store, 'check', opts.signal);
  const result: CheckResult = { releases: 0, objects: 0, bytes: 0, faults: [], warnings: [] };
  const fault: Report = (what, problem) => {
    result.faults.push({ what, problem });
    opts.onFault?.({ what, problem });
  };
  const warn: Report = (what, problem) => result.warnings.push({ what, problem });
  const got = await checkCatalog(repo, store, opts.verify, fault, warn, opts.signal);
  await checkConvergence(store, got, fault, opts.lagWaitMs ?? LAG_WAIT_MS, opts.signal);
  const objects = new Map<string, { size: number; where: string; records: string[] }>();
  const foreign = (folder: string, why: string) => warn(folder, `${why}: a folder no tarport wrote, left out of every listing; move it out of the repository`);
  for (const { name, tag } of await listTags(store, opts.signal, foreign)) {
    const pinned = got?.catalog.releases.find((e) => e.name === name && e.tag === tag);
    for (const ref of await listReleases(store, name, tag, opts.signal)) {
      result.releases++;
      const where = `${name}:${tag} v${ref.version} (${recordKey(name, tag, ref.record)})`;
      let record: ReleaseRecord;
      try {
        const pin = pinned?.record === ref.record ? { digest: pinned.digest, size: pinned.size } : undefined;
        const sig = opts.signal ? { signal: opts.signal } : {};
        record = (pin ? await readRecord(store, ref, pin, sig) : await readRecord(store, ref, undefined, sig)).record;
        if (opts.verify) await readRecord(store, ref, undefined, { ...sig, verify: opts.verify }).catch((e: unknown) => faultOrThrow(fault, where, e, store.transport.capabilities.local));
      } catch (e) {
        faultOrThrow(fault, where, e, store.transport.capabilities.local);
        continue;
      }
      for (const d of recordObjects(record)) {
        const seen = objects.get(d.digest);
        if (seen) seen.records.push(recordKey(name, tag, ref.record));
        else objects.set(d.digest, { size: d.size, where, records: [recordKey(name, tag, ref.record)] });
      }
    }
  }
  await checkObjects(store, objects, result, fault, opts.signal);
  await housekeepingWarnings(store, warn, opts.signal);
  if (got) {
    // warnings: the registry path is an extra that consumers running tarport never read
    const view = await checkRegistryView(store, got.catalog, opts.signal);
    for (const f of [...view.off, ...view.skipped]) warn(f.what, f.problem);
  }
  return result;
}

async function checkObjects(store: Store, objects: Map<string, { size: number; where: string; records: string[] }>, result: CheckResult, fault: Report, signal?: AbortSignal): Promise<void> {
  for (const [digest, { size, where, records }] of objects) {
    signal?.throwIfAborted();
    result.objects++;
    try {
      // one hash on the way, over buffers the transport lends (no stream per chunk)
      const check = new DigestCheck({ digest, size }, `object ${digest} in ${store.location}`);
      await readBlobTo(store, { digest, size }, (c) => check.update(c), signal ? { signal } : {});
      check.finish();
      result.bytes += check.bytes;
    } catch (e) {
      // gone with its releases: a gc removed them all while this check ran (records go first); one
      // record still there that names it makes it a fault
      if (isTarportError(e, 'NOT_FOUND') && !(await anyThere(store, records, signal))) continue;
      faultOrThrow(fault, `object ${digest} (named by ${where})`, e, store.transport.capabilities.local);
    }
  }
}

async function housekeepingWarnings(store: Store, warn: Report, signal?: AbortSignal): Promise<void> {
  // acknowledgements are informational: one that does not parse is worth a warning, not a fault
  for (const b of (await readAcks(store, signal)).bad) warn(b.file, `acknowledgement not readable (${b.problem}); the host that wrote it writes it again after its next load`);
  for (const t of await findTempFiles(store, signal)) warn(t.key, `temporary file left by an interrupted write${t.mtime ? ` (${t.mtime.toISOString()})` : ''}; 'tarport gc' removes it once no publish runs`);
  for (const kind of ['intent', 'gc'] as const) {
    for (const p of await listPending(store, kind, signal, (key, why) => warn(key, `unreadable: ${why}`))) {
      if (!holds(p)) warn(p.key, `${kind === 'intent' ? 'publish intent' : 'gc notice'} expired at ${new Date(p.until).toISOString()} (its writer stopped); 'tarport gc' removes it`);
    }
  }
}

async function anyThere(store: Store, keys: readonly string[], signal?: AbortSignal): Promise<boolean> {
  for (const k of keys) if (await store.stat(k, signal)) return true;
  return false;
}
