import { ACKS_FOLDER, catalogFileName, BLOBS_FOLDER, CATALOGS_FOLDER, PENDING_FOLDER, RELEASES_FOLDER, TARPORT_FOLDER, isTempName, recordKey } from './layout.js';
import { listCatalogFiles, readCatalog } from './catalog.js';
import { CLOCK_SKEW_MS, announceGc, holds, listPending } from './intents.js';
import { objectOfFile } from './objects.js';
import { removeDigestCopies } from './registry.js';
import { listReleases, listTags, readRecord, signatureKey, unreadableRecord, type ReleaseRef } from './read.js';
import type { ReleaseRecord } from './records.js';
import { recordObjects } from './platforms.js';
import { storeOf, type Repository } from './repository.js';
import type { Store } from './store.js';
import { sha256 } from '../crypto/index.js';
import { requireRepository } from './transaction.js';
import { messageOf } from '../errors.js';

export interface GcResult {
  releasesRemoved: string[];
  objectsRemoved: string[];
  bytesFreed: number;
  temporaryRemoved: string[];
  /** Objects unreferenced but spared: a publish under way announced it will reference them. */
  objectsSpared: string[];
  /** Intents and gc notices that had expired, and superseded catalog copies. */
  housekeeping: string[];
  /** Objects left for the next run: the gc window (GC_WINDOW_MS) ended before their turn. */
  objectsLeft: number;
  /**
   * Tags whose releases were all kept, and why: a record that should be kept does not read (damaged),
   * so what stands in its place is kept rather than leave the tag with nothing that loads.
   */
  tagsKept?: string[];
}

const objectsOf = (r: ReleaseRecord) => recordObjects(r).map((d) => d.digest);

/** Every temporary file in the repository's folders (left by interrupted writes), with its age. */
export async function findTempFiles(store: Store, signal?: AbortSignal): Promise<{ key: string; mtime?: Date }[]> {
  // acks/: only the temporary files of an interrupted acknowledgement; the acknowledgements stay
  const folders = ['', BLOBS_FOLDER, TARPORT_FOLDER, CATALOGS_FOLDER, PENDING_FOLDER, RELEASES_FOLDER, ACKS_FOLDER];
  for (const n of await store.list(RELEASES_FOLDER, signal)) {
    if (!n.isDir) continue;
    folders.push(`${RELEASES_FOLDER}/${n.name}`);
    for (const t of await store.list(`${RELEASES_FOLDER}/${n.name}`, signal)) if (t.isDir) folders.push(`${RELEASES_FOLDER}/${n.name}/${t.name}`);
  }
  const out: { key: string; mtime?: Date }[] = [];
  for (const f of folders) {
    for (const e of await store.list(f, signal)) if (!e.isDir && isTempName(e.name)) out.push({ key: f ? `${f}/${e.name}` : e.name, ...(e.mtime ? { mtime: e.mtime } : {}) });
  }
  return out;
}

interface Plan {
  readonly referenced: Set<string>;
  readonly seen: Set<string>;
  /** A kept record does not read: what it names is unknown, so no object is collected. */
  damaged?: boolean;
}

/** Step 1: keep the newest `keep` releases of every tag (and the catalog's), remove the rest; note what the kept ones name. */
async function sweepReleases(store: Store, opts: GcOptions, result: GcResult): Promise<Plan> {
  const plan: Plan = { referenced: new Set(), seen: new Set() };
  const catalog = (await readCatalog(store, opts.signal))?.catalog;
  for (const { name, tag } of await listTags(store, opts.signal)) {
    const refs = await listReleases(store, name, tag, opts.signal);
    const keep = new Set(refs.slice(-Math.max(1, opts.keep)).map((r) => r.record));
    const current = catalog?.releases.find((e) => e.name === name && e.tag === tag)?.record;
    if (current) keep.add(current); // never the release the catalog names
    for (const ref of refs) plan.seen.add(recordKey(name, tag, ref.record));
    // every release kept is read before any is removed: if one is damaged, the older ones are all
    // that may still load, and none goes
    const damaged = await referenceKept(store, refs.filter((r) => keep.has(r.record)), plan, opts.signal);
    if (damaged) {
      await referenceKept(store, refs.filter((r) => !keep.has(r.record)), plan, opts.signal);
      // what the damaged record names cannot be known: no object is collected this run
      plan.damaged = true;
      (result.tagsKept ??= []).push(`${name}:${tag}: every release kept, and no object collected, since ${damaged}; run 'tarport check'`);
      continue;
    }
    for (const ref of refs.filter((r) => !keep.has(r.record))) {
      result.releasesRemoved.push(`${name}:${tag} v${ref.version}`);
      if (!opts.dryRun) await removeRelease(store, ref);
    }
  }
  return plan;
}

/** Adds what the records name to the plan's referenced objects; says which one is damaged, if one is. */
async function referenceKept(store: Store, refs: readonly ReleaseRef[], plan: Plan, signal?: AbortSignal): Promise<string | undefined> {
  let damaged: string | undefined;
  for (const ref of refs) {
    try {
      const { record } = await readRecord(store, ref, undefined, signal ? { signal } : {});
      for (const d of objectsOf(record)) plan.referenced.add(d);
    } catch (e) {
      // a record that could not be read (a dropped link) may name live objects: the sweep stops
      if (signal?.aborted || !unreadableRecord(e)) throw e;
      damaged ??= `v${ref.version} (${ref.record}) does not read: ${messageOf(e)}`;
    }
  }
  return damaged;
}

/** Records written since step 1 (a publish that ended meanwhile): what they name is live too. */
async function newlyReferenced(store: Store, plan: Plan, signal?: AbortSignal): Promise<Set<string>> {
  const out = new Set<string>();
  for (const { name, tag } of await listTags(store, signal)) {
    for (const ref of await listReleases(store, name, tag, signal)) {
      if (plan.seen.has(recordKey(name, tag, ref.record))) continue;
      try {
        for (const d of objectsOf((await readRecord(store, ref, undefined, signal ? { signal } : {})).record)) out.add(d);
      } catch (e) {
        // damaged: it names nothing we can know of, and check reports it; a record that could not be
        // read (a dropped link) may name live objects: the sweep stops rather than remove them
        if (signal?.aborted || !unreadableRecord(e)) throw e;
      }
    }
  }
  return out;
}

export interface GcOptions {
  keep: number;
  dryRun: boolean;
  graceMs: number;
  signal?: AbortSignal;
}

/**
 * Keeps the newest `keep` releases of every tag and removes the rest, then every object nothing
 * kept, published meanwhile or announced by a publish under way names, then temporary files and
 * expired intents. The safety argument against concurrent publishes is in docs/repo-format.md
 * ("Garbage collection and concurrent publishes"): gc announces what it will delete before it
 * reads the intents, a publish writes its intent before it reads the announcements, and each side
 * acts only on what it read after its own write.
 */
export async function collectGarbage(repo: Repository, opts: GcOptions): Promise<GcResult> {
  const store = storeOf(repo);
  await requireRepository(store, 'gc', opts.signal);
  const result: GcResult = { releasesRemoved: [], objectsRemoved: [], bytesFreed: 0, temporaryRemoved: [], objectsSpared: [], housekeeping: [], objectsLeft: 0 };
  const old = (mtime: Date | undefined) => mtime !== undefined && Date.now() - mtime.getTime() > opts.graceMs;
  const plan = await sweepReleases(store, opts, result);
  // Candidates: object files nothing kept names, older than the grace period (a tarport 0.1
  // producer writes no intent: for it the age is still the only protection).
  const candidates = new Map<string, { key: string; size: number; whole: boolean }[]>();
  for (const f of plan.damaged ? [] : await store.list(BLOBS_FOLDER, opts.signal)) {
    const digest = f.isDir ? undefined : objectOfFile(f.name);
    if (!digest || plan.referenced.has(digest) || !old(f.mtime)) continue;
    const files = candidates.get(digest) ?? [];
    files.push({ key: `${BLOBS_FOLDER}/${f.name}`, size: f.size, whole: f.name === digest.slice(7) });
    candidates.set(digest, files);
  }
  const notice = candidates.size > 0 && !opts.dryRun ? await announceGc(store, [...candidates.keys()], opts.signal) : undefined;
  try {
    const intents = await listPending(store, 'intent', opts.signal);
    const live = new Set(intents.filter((i) => holds(i)).flatMap((i) => i.objects));
    const since = await newlyReferenced(store, plan, opts.signal);
    for (const [digest, files] of candidates) {
      if (live.has(digest) || since.has(digest)) {
        result.objectsSpared.push(digest);
        continue;
      }
      if (notice && Date.now() >= notice.deadline) {
        // past our announced deadline a publish may count on this object again: leave it
        result.objectsLeft++;
        continue;
      }
      for (const f of files) {
        if (!opts.dryRun) await store.remove(f.key, opts.signal);
        result.bytesFreed += f.size;
        if (f.whole) result.objectsRemoved.push(digest);
      }
    }
    // the registry view's copies of manifests gone: a client asking for them gets a 404
    result.housekeeping.push(...(await removeDigestCopies(store, new Set(result.objectsRemoved), opts.dryRun, opts.signal)));
    await removeTemporary(store, intents.some((i) => holds(i)), old, opts, result);
    await removeStalePending(store, opts, result);
    await removeOldCatalogs(store, old, opts, result);
  } finally {
    if (notice) await store.remove(notice.key).catch(() => undefined);
  }
  return result;
}

/** How long a temporary file in tarport/pending/ stays whatever --grace says (see removeTemporary). */
const PENDING_TEMP_FLOOR_MS = 10 * 60_000;

/** Temporary files of interrupted writes; none while a publish runs (its staged objects are temporary files). */
async function removeTemporary(store: Store, publishing: boolean, old: (m: Date | undefined) => boolean, opts: GcOptions, result: GcResult): Promise<void> {
  if (publishing) return;
  for (const t of await findTempFiles(store, opts.signal)) {
    if (!old(t.mtime)) continue;
    // an intent being written is not visible yet, so no intent protects its own temporary file:
    // those stay for a while whatever the grace (they are a few hundred bytes)
    if (t.key.startsWith(`${PENDING_FOLDER}/`) && !(t.mtime && Date.now() - t.mtime.getTime() > PENDING_TEMP_FLOOR_MS)) continue;
    result.temporaryRemoved.push(t.key);
    if (!opts.dryRun) await store.remove(t.key, opts.signal);
  }
}

/** Intents and notices whose writer stopped without withdrawing them, once they no longer hold. */
async function removeStalePending(store: Store, opts: GcOptions, result: GcResult): Promise<void> {
  for (const kind of ['intent', 'gc'] as const) {
    const bad: string[] = [];
    for (const p of await listPending(store, kind, opts.signal, (key) => bad.push(key))) {
      if (Date.now() < p.until + CLOCK_SKEW_MS + opts.graceMs) continue;
      result.housekeeping.push(p.key);
      if (!opts.dryRun) await store.remove(p.key, opts.signal);
    }
    for (const key of bad) result.housekeeping.push(`${key} (unreadable, kept)`);
  }
}

/** Superseded catalog copies: the current one, the 3 newest and young ones stay. */
async function removeOldCatalogs(store: Store, old: (m: Date | undefined) => boolean, opts: GcOptions, result: GcResult): Promise<void> {
  const current = await readCatalog(store, opts.signal);
  const keep = new Set((await listCatalogFiles(store, opts.signal)).slice(-3));
  if (current) keep.add(catalogFileName(current.catalog.sequence, sha256(current.bytes)));
  for (const e of await store.list(CATALOGS_FOLDER, opts.signal)) {
    const base = e.name.endsWith('.asc') ? e.name.slice(0, -4) : e.name;
    if (e.isDir || isTempName(e.name) || keep.has(base) || !old(e.mtime)) continue;
    result.housekeeping.push(`${CATALOGS_FOLDER}/${e.name}`);
    if (!opts.dryRun) await store.remove(`${CATALOGS_FOLDER}/${e.name}`, opts.signal);
  }
}

async function removeRelease(store: Store, ref: ReleaseRef): Promise<void> {
  const key = recordKey(ref.name, ref.tag, ref.record);
  await store.remove(key);
  await store.remove(signatureKey(key));
}
