import { pipeline } from 'node:stream/promises';
import { Writable, type Readable } from 'node:stream';
import { CodecError, decompressor, ociBlobPath, ociLayerMediaType, prewarmDecompressors, releaseDecompressors, releaserOf, threadedDecompressor, writeLoadArchive, writeOciLoadArchive, type Compression, type LoadFile } from '../archive/index.js';
import { Digester, hexOf, sha256, verifyDetached, type DecryptionKey, type TrustedKey } from '../crypto/index.js';
import { formatPlatform, type Fetched, type ImageName, type LoadPlan, type Platform, type Runtime, type VerifiedLoad } from '../runtime/index.js';
import { isRefusalCode, messageOf, TarportError } from '../errors.js';
import { MAX_SMALL_BLOB_BYTES, compareReleases, configPlatform, formatRecordPlatform, parsePlatform, pickPlatform, platformView, samePlatform, familiarName, qualifiedName, sameName, type AckEntry, type Catalog, type CatalogEntry, type LayerDescriptor, type PinnedRecord, type ReleaseRecord, type Repository } from '../repo/index.js';
import { ObjectCache } from './cache.js';
import { FetchChain } from './fetches.js';
import { runHook } from './hook.js';
import { checkEncrypted, decryptConfig, openLayer, type ObjectFile } from './encryption.js';
import { StateStore, type State } from './state.js';

export interface Subscription {
  readonly name: string;
  /** Undefined: every tag of the name. */
  readonly tag?: string;
}

export interface PullOptions {
  /** Empty: follow everything in the catalog. */
  readonly subscriptions: readonly Subscription[];
  readonly stateDir: string;
  /** Accept a catalog whose expiry has passed (a late stick); loud in the log. */
  readonly allowExpired?: boolean;
  /** How long to wait for another run's lock before giving up. */
  readonly lockWaitMs?: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: PullEvent) => void;
  /**
   * Skip the run when the catalog's size and modification time are what they were at the last read:
   * an idle poll then costs one small request, however many releases the repository holds.
   */
  readonly cheap?: boolean;
  /** Releases (by record digest) that failed before: skipped until the catalog offers another. */
  readonly skip?: ReadonlyMap<string, string>;
  /** Runs after each successful load with NAME:TAG and the version as arguments. */
  readonly hook?: string;
  /** Keep this many earlier images of each tag; older ones are removed from the daemon. */
  readonly keepImages?: number;
  /** false: report refused releases in the result instead of throwing (the poll daemon). */
  readonly throwOnRefused?: boolean;
  /**
   * Pinned keys: when given, the catalog and every release record must carry a valid signature by
   * one of them. Keys are never taken from the repository.
   */
  readonly trust?: readonly TrustedKey[];
  /** Private key for encrypted releases. */
  readonly decryptKey?: DecryptionKey;
  /** With decryptKey: load releases whose layers or config are not encrypted too (refused otherwise). */
  readonly allowUnencrypted?: boolean;
  /**
   * Fill the verified cache with every object the releases need, and load nothing (fleets prefetch
   * ahead of a maintenance window; a later pull loads from the cache). Needs no runtime.
   */
  readonly fetchOnly?: boolean;
  /**
   * The platform to load from multi-platform releases, and to import root file systems as (their
   * records name none); default: the runtime's own. A release that has no image for it is refused
   * (PLATFORM, exit 2), naming the platforms it has. A single-platform image loads as it is.
   */
  readonly platform?: Platform;
  /**
   * Leave an acknowledgement (tarport/acks/<id>.json) after a run that loaded something, when the
   * repository can be written; bounded by `timeoutMs`, and never a failure of the pull.
   */
  readonly ack?: { readonly id: string; readonly hostname: string; readonly timeoutMs: number };
}

export type PullEvent =
  | { kind: 'up-to-date'; ref: string; version: number }
  | { kind: 'loading'; ref: string; version: number; layers: number; skipped: number }
  | { kind: 'loaded'; ref: string; version: number; imageId: string; bytesFetched: number; signer?: string; runtime: string; platform: string; via?: string }
  | { kind: 'fetched'; ref: string; version: number; objects: number; bytesFetched: number }
  | { kind: 'warning'; message: string }
  | { kind: 'refused'; ref: string; version: number; digest: string; message: string; code: string }
  | { kind: 'hook'; ref: string; version: number; ok: boolean; message: string }
  | { kind: 'removed-image'; ref: string; imageId: string }
  /** The acknowledgement of this host's loads: written, or why not (read-only, timeout, error). */
  | { kind: 'ack'; written: boolean; readOnly: boolean; host: string; message: string }
  | { kind: 'idle' }
  /** The location holds a repository (tarport init) with nothing published yet: nothing to load, no fault. */
  | { kind: 'empty'; message: string };

export interface PullResult {
  readonly loaded: { ref: string; version: number; imageId: string }[];
  readonly upToDate: string[];
  readonly bytesFetched: number;
  /** True when a cheap check found the catalog unchanged and nothing else was read. */
  readonly idle: boolean;
  /** Releases refused in this run, by name:tag, with their record digest. */
  readonly refused: { ref: string; digest: string; code: string; message: string }[];
  /** With fetchOnly: the releases whose objects are now all in the cache. */
  readonly fetched?: { ref: string; version: number }[];
}

function subscribed(subs: readonly Subscription[], e: CatalogEntry): boolean {
  return subs.length === 0 || subs.some((s) => sameName(s.name, e.name) && (s.tag === undefined || s.tag === e.tag));
}

/** A release's name as the runtime is told it: familiar for Docker, qualified for containerd and Podman. */
function imageName(name: string, tag: string): ImageName {
  return { familiar: `${familiarName(name)}:${tag}`, qualified: `${qualifiedName(name)}:${tag}` };
}

/**
 * One consumer run: read the catalog, pick the subscribed releases that are newer than what was
 * loaded, fetch only missing objects into the cache (verified), and load them into the runtime.
 */
export async function pull(repo: Repository, docker: Runtime, opts: PullOptions): Promise<PullResult> {
  const store = new StateStore(opts.stateDir);
  const unlock = await store.lock(opts.lockWaitMs ?? 5_000);
  try {
    return await pullLocked(repo, docker, store, opts);
  } finally {
    releaseDecompressors();
    await unlock();
  }
}

async function pullLocked(repo: Repository, docker: Runtime, store: StateStore, opts: PullOptions): Promise<PullResult> {
  const emit = opts.onEvent ?? (() => undefined);
  const state = await store.read();
  const loc = repo.location;
  const result: PullResult = { loaded: [], upToDate: [], bytesFetched: 0, idle: false, refused: [], ...(opts.fetchOnly ? { fetched: [] } : {}) };
  const stat = await repo.catalogStat(opts.signal);
  if (!stat) {
    // a consumer set up right after `tarport init` waits for the first push; a location that holds
    // no repository at all (a typo, a mount that is not there) stays a fault
    const id = await repo.identity(opts.signal);
    if (!id) throw new TarportError('NOT_FOUND', `${repo.location} holds no catalog (tarport/catalog.json): not a tarport repository, or nothing was pushed yet`);
    // releases without a catalog: a push cut before its catalog, or a catalog lost; not "empty"
    if ((await repo.listTags(opts.signal)).length > 0) throw new TarportError('NOT_FOUND', `${repo.location} holds releases but no catalog (tarport/catalog.json): a push cut short, or the catalog lost; run 'tarport repair ${repo.location}'`);
    // nor is a repository this host took a catalog from before (a mirror that offers no listing, or
    // answers 404 for the catalog it hides): "empty" would keep it on old releases past any expiry
    const seen = state.catalogSequence[`repository:${id}`] ?? state.catalogSequence[loc];
    if (seen !== undefined) throw new TarportError('NOT_FOUND', `${loc} holds no catalog (tarport/catalog.json), but this host accepted its catalog at sequence ${seen} before: a mirror or cache that hides it, or the catalog lost; run 'tarport repair' on the repository if it is lost`);
    emit({ kind: 'empty', message: `${repo.location} is a repository with nothing published yet: nothing to load` });
    return result;
  }
  const last = state.catalogStat[loc];
  if (opts.cheap && last && last.size === stat.size && last.mtime === stat.mtime && stat.mtime !== 0) {
    emit({ kind: 'idle' });
    return { ...result, idle: true };
  }
  const got = await readTrustedCatalog(repo, opts);
  const { catalog } = got;
  // rollback state follows the repository (its id, covered by the catalog's signature), not the path
  const key = stateKey(state, catalog, loc);
  const seen = state.catalogSequence[key] ?? 0;
  // an older copy (an old stick, a mirror behind, a stick whose merged catalog ran ahead of its
  // source): no tag goes back through it (pullRelease refuses that release), and what it carries
  // that was not loaded is loaded as from any catalog
  if (catalog.sequence < seen) emit({ kind: 'warning', message: `catalog of ${loc} has sequence ${catalog.sequence}, lower than ${seen} accepted before from the same repository (${catalog.repository ?? loc}): an older copy; no tag goes back through it` });
  if (Date.parse(catalog.expires) < Date.now()) {
    const msg = `catalog of ${loc} expired at ${catalog.expires}`;
    if (!opts.allowExpired) throw new TarportError('EXPIRED', `${msg}; publish again to refresh it, or pass --allow-expired to load from it anyway`);
    emit({ kind: 'warning', message: `${msg}; loading anyway because --allow-expired was given` });
  }
  for (const s of opts.subscriptions) {
    if (!catalog.releases.some((e) => subscribed([s], e))) emit({ kind: 'warning', message: `${s.name}${s.tag ? ':' + s.tag : ''} is not in the catalog of ${loc}` });
  }
  const round: Round = { repo, docker, store, state, opts, emit, result, key, ...(catalog.sequence < seen ? { olderCopy: { sequence: catalog.sequence, seen } } : {}), loadedHere: (state.loaded[key] ??= {}), acked: [], cache: new ObjectCache(store.cacheDir), anyThin: false };
  let failure: unknown;
  for (const entry of catalog.releases.filter((e) => subscribed(opts.subscriptions, e))) {
    opts.signal?.throwIfAborted();
    try {
      await pullRelease(round, entry);
    } catch (e) {
      if ((e as { code?: string }).code === 'ABORTED' || opts.signal?.aborted) throw e;
      refuse(round, entry, e);
      failure ??= e;
    }
  }
  const { cache, anyThin, acked } = round;
  // a runtime that takes thin archives keeps what it loaded: the cache need not; once per run, so
  // that objects prefetched for later releases, and those of a release that failed, stay
  if (anyThin && result.refused.length === 0) for (const p of await cache.prune(new Set())) emit({ kind: 'warning', message: p });
  state.catalogSequence[key] = Math.max(seen, catalog.sequence);
  // a prefetch loads nothing, and a release that failed for a transient reason must be tried again:
  // in both cases a cheap poll that saw this stat would take the catalog as handled
  if (!opts.fetchOnly && result.refused.every((f) => isRefusalCode(f.code))) state.catalogStat[loc] = stat;
  await store.write(state);
  if (acked.length && opts.ack) await acknowledge(repo, opts.ack, acked, emit, opts.signal);
  if (failure && opts.throwOnRefused !== false) throw failure;
  return result;
}

/** Leaves this host's acknowledgement; says how it went, and never fails the pull. */
async function acknowledge(repo: Repository, host: NonNullable<PullOptions['ack']>, loaded: AckEntry[], emit: (e: PullEvent) => void, signal?: AbortSignal): Promise<void> {
  const r = await repo.acknowledge({ id: host.id, hostname: host.hostname }, loaded, { timeoutMs: host.timeoutMs, ...(signal ? { signal } : {}) });
  emit(
    r.written
      ? { kind: 'ack', written: true, readOnly: false, host: host.id, message: `acknowledged ${loaded.length} release(s) in ${repo.location} as host ${host.id} (${r.key})` }
      : { kind: 'ack', written: false, readOnly: r.readOnly, host: host.id, message: `no acknowledgement left in ${repo.location}: ${r.reason}` },
  );
}

/** What one run shares between its releases. */
interface Round {
  readonly repo: Repository;
  readonly docker: Runtime;
  readonly store: StateStore;
  readonly state: State;
  readonly opts: PullOptions;
  readonly emit: (e: PullEvent) => void;
  readonly result: PullResult;
  /** This repository's key in the state (stateKey). */
  readonly key: string;
  /** Set when the catalog's sequence is below the highest accepted from this repository. */
  readonly olderCopy?: { readonly sequence: number; readonly seen: number };
  /** This repository's part of the state: what was loaded from it, by name:tag. */
  readonly loadedHere: State['loaded'][string];
  readonly acked: AckEntry[];
  readonly cache: ObjectCache;
  platform?: Platform;
  anyThin: boolean;
}

function refuse(round: Round, entry: CatalogEntry, e: unknown): void {
  const ref = `${entry.name}:${entry.tag}`;
  const code = (e as { code?: string }).code ?? 'INTERNAL';
  const message = e instanceof Error ? e.message : String(e);
  round.result.refused.push({ ref, digest: entry.digest, code, message });
  round.emit({ kind: 'refused', ref, version: entry.version, digest: entry.digest, message, code });
}

/**
 * One subscribed release of the catalog: up to date, skipped, fetched or loaded; a fault (the
 * runtime's included, asked whether the image is still there) refuses this release only.
 */
async function pullRelease(round: Round, entry: CatalogEntry): Promise<void> {
  const { opts, emit, docker, result } = round;
  const ref = `${entry.name}:${entry.tag}`;
  const prev = round.loadedHere[ref];
  // a platform other than the one loaded for (--platform given, changed or dropped) is no "up to date";
  // another spelling of it (arm64/v8 and arm64, arm and arm/v7) is the same platform
  const otherPlatform = !opts.fetchOnly && prev?.platform !== undefined && prev.digest === entry.digest && !loadedFor(prev.platform, (round.platform ??= opts.platform ?? (await docker.platform(opts.signal))));
  if (prev?.digest === entry.digest && !otherPlatform && (opts.fetchOnly || (await docker.imageId(imageName(entry.name, entry.tag), opts.signal)) === prev.imageId)) {
    // still there (a removed image is loaded again); a prefetch loads nothing, so asks nothing
    result.upToDate.push(ref);
    emit({ kind: 'up-to-date', ref, version: entry.version });
    if (prev.hookPending && opts.hook && !opts.fetchOnly) {
      emit({ kind: 'warning', message: `the hook for ${ref} v${prev.version} did not run to its end after its load (the run was cut short); running it now` });
      await hook(round, ref, prev);
    }
    // earlier images kept last time (a name was still on them, a container used them) are tried again
    if (opts.keepImages !== undefined && !opts.fetchOnly) await retire(docker, prev, ref, opts.keepImages, emit, () => round.store.write(round.state));
    return;
  }
  // (version, record file name) orders a tag's releases, two producers' v5 included (compareReleases)
  if (prev && prev.digest !== entry.digest && compareReleases(entry, prev) < 0) {
    const copy = round.olderCopy ? ` (the catalog is an older copy, sequence ${round.olderCopy.sequence} below ${round.olderCopy.seen} accepted: replayed, an old stick or a mirror behind)` : '';
    const which = entry.version === prev.version ? ` (${entry.record}, ordered before ${prev.record}: two producers wrote v${prev.version})` : '';
    throw new TarportError('ROLLBACK', `${ref}: the catalog offers v${entry.version}, older than v${prev.version} loaded before${which}${copy}; refusing`);
  }
  if (opts.skip?.get(ref) === entry.digest) return; // refused before and unchanged since
  const trust = opts.trust?.length ? opts.trust : undefined;
  const verified = await round.repo.readRecord(entry, { digest: entry.digest, size: entry.size }, {
    ...(trust ? { verify: (data: Buffer, sig: Buffer | undefined, what: string) => verifyDetached(data, sig, trust, what) } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  checkEncrypted(verified.record, opts);
  if (opts.fetchOnly) return prefetch(round, verified.record);
  refuseOlderThanElsewhere(round, ref, verified.record);
  await loadRelease(round, entry, verified);
}

/** Whether `kept`, the platform the state says a release was loaded for (formatPlatform), is `now` in another spelling or the same. */
function loadedFor(kept: string, now: Platform): boolean {
  try {
    return samePlatform(parsePlatform(kept, 'the state\'s platform'), now);
  } catch {
    return false; // a state written by hand that names no platform: loaded again, as for another platform
  }
}

/** --fetch-only: the release's objects (this platform's, with --platform) into the cache. */
async function prefetch(round: Round, record: ReleaseRecord): Promise<void> {
  const { opts, result } = round;
  const f = await fetchRelease(round.repo, round.cache, opts.platform && record.kind === 'image' ? platformView(record, opts.platform) : record, opts.signal);
  (result as { bytesFetched: number }).bytesFetched += f.bytesFetched;
  result.fetched!.push({ ref: `${record.name}:${record.tag}`, version: record.version });
  round.emit({ kind: 'fetched', ref: `${record.name}:${record.tag}`, version: record.version, ...f });
}

/** Loads a verified release, records it as loaded, then retires old images and runs the hook. */
async function loadRelease(round: Round, entry: CatalogEntry, verified: PinnedRecord): Promise<void> {
  const { opts, emit, docker, result, repo, cache } = round;
  const record = verified.record;
  const ref = `${entry.name}:${entry.tag}`;
  const prev = round.loadedHere[ref];
  const signer = verified.signedBy as string | undefined;
  const platform = (round.platform ??= opts.platform ?? (await docker.platform(opts.signal)));
  // a multi-platform release: this platform's image only (its config and layers); never an attestation
  const view = record.kind === 'image' ? { ...verified, record: platformView(record, platform) } : verified;
  const { imageId, bytesFetched, thin, via, platform: made, otherPlatform } = record.kind === 'image'
    ? await loadImage(repo, docker, cache, view, (e) => emit(e), opts.decryptKey, opts.signal)
    : await importRootfs(repo, docker, cache, verified, platform, opts.decryptKey, opts.signal);
  // the state keeps the platform asked, so that the next round does not import it again
  if (otherPlatform) emit({ kind: 'warning', message: otherPlatform });
  // what was loaded, not what was asked: a single-platform image is what its config says (the
  // runtime loads it whatever --platform says), a multi-platform one the platform picked for this
  // one (arm/v6 on an arm/v7 host), a root file system what the runtime made it
  const loadedAs = made ?? (record.index ? formatRecordPlatform(pickPlatform(record, platform)!.platform) : 'unknown/unknown');
  (result as { bytesFetched: number }).bytesFetched += bytesFetched;
  const previous = prev && prev.imageId !== imageId ? [prev.imageId, ...prev.previous.filter((p) => p !== imageId)] : (prev?.previous ?? []);
  const loaded = (round.loadedHere[ref] = { version: record.version, record: entry.record, digest: entry.digest, imageId, loadedAt: new Date().toISOString(), created: record.created, contentKey: record.contentKey, order: ++round.state.loads, ...(record.kind === 'rootfs' || record.index ? { platform: formatPlatform(platform) } : {}), previous, ...(prev?.keptSaid ? { keptSaid: prev.keptSaid } : {}), ...(opts.hook ? { hookPending: true } : {}) });
  await round.store.write(round.state);
  result.loaded.push({ ref, version: record.version, imageId });
  round.acked.push({ name: entry.name, tag: entry.tag, version: record.version, digest: entry.digest, platform: loadedAs, runtime: docker.kind, loaded: loaded.loadedAt });
  emit({ kind: 'loaded', ref, version: record.version, imageId, bytesFetched, ...(signer ? { signer } : {}), runtime: docker.kind, platform: loadedAs, ...(via ? { via } : {}) });
  round.anyThin ||= thin;
  if (opts.keepImages !== undefined) await retire(docker, loaded, ref, opts.keepImages, emit, () => round.store.write(round.state));
  if (opts.hook) await hook(round, ref, loaded);
}

/**
 * A tag whose last load came from another repository (one the producer re-created, or another one
 * signed by the same key, served in this one's place) moves forward only: a release created before
 * the one loaded is refused, unless it is the same image (one image pushed to two repositories).
 * Sequences and versions are a repository's own and do not compare across repositories; the signed
 * creation times do, as far as the producers' clocks agree. Which load came last is the state's own
 * count, not this host's clock. A load the state recorded without its creation time (written before
 * the state kept it) is not compared.
 */
function refuseOlderThanElsewhere(round: Round, ref: string, record: ReleaseRecord): void {
  const here = round.loadedHere[ref];
  const other = lastLoadedElsewhere(round.state, round.key, ref);
  if (!other?.loaded.created || (here && loadOrder(here) >= loadOrder(other.loaded))) return;
  if (other.loaded.contentKey === record.contentKey) return;
  const created = Date.parse(record.created);
  if (!Number.isNaN(created) && created >= Date.parse(other.loaded.created)) return;
  const from = other.key.startsWith('repository:') ? `repository ${other.key.slice('repository:'.length)}` : other.key;
  throw new TarportError(
    'ROLLBACK',
    `${ref}: ${round.repo.location} offers v${record.version} created ${record.created}, older than v${other.loaded.version} created ${other.loaded.created} that was loaded last, from ${from}; refusing (a tag goes back only by a newer push); what is loaded stays`,
  );
}

type LoadedEntry = State['loaded'][string][string];

/** A load's place in the state's order; loads recorded before the order was kept come first, by time. */
function loadOrder(l: LoadedEntry): number {
  return l.order ?? 0;
}

/** The last load of `ref` (by Docker's familiar name) from any repository but `key`. */
function lastLoadedElsewhere(state: State, key: string, ref: string): { key: string; loaded: LoadedEntry } | undefined {
  const same = familiarRef(ref);
  let last: { key: string; loaded: LoadedEntry } | undefined;
  for (const [k, tags] of Object.entries(state.loaded)) {
    if (k === key) continue;
    for (const [r, l] of Object.entries(tags)) {
      if (familiarRef(r) !== same) continue;
      const later = !last || loadOrder(l) > loadOrder(last.loaded) || (loadOrder(l) === loadOrder(last.loaded) && Date.parse(l.loadedAt) > Date.parse(last.loaded.loadedAt));
      if (later) last = { key: k, loaded: l };
    }
  }
  return last;
}

/** "name:tag" with the name in Docker's familiar form (docker.io/library/x:1 is x:1). */
function familiarRef(ref: string): string {
  const at = ref.lastIndexOf(':');
  return `${familiarName(ref.slice(0, at))}:${ref.slice(at + 1)}`;
}

/**
 * Runs the hook for a loaded release. The state says it is due from the load on (hookPending), and
 * no longer once it ran to its end, failed or not: a run cut short between the two (a crash, a
 * SIGTERM) leaves it due, and the next run runs it. A state that cannot record that it ran is said;
 * the hook then runs again next time.
 */
async function hook(round: Round, ref: string, loaded: State['loaded'][string][string]): Promise<void> {
  const { cancelled, ...outcome } = await runHook(round.opts.hook!, ref, loaded.version, round.opts.signal);
  round.emit({ kind: 'hook', ref, version: loaded.version, ...outcome });
  if (cancelled) return;
  delete loaded.hookPending;
  await round.store.write(round.state).catch((e: unknown) =>
    round.emit({ kind: 'warning', message: `the hook for ${ref} v${loaded.version} ran, but the consumer state could not record it (it will run again): ${messageOf(e)}` }),
  );
}

/**
 * The key of a repository in the consumer state: its id when the catalog names one, else (a
 * tarport 0.1 repository) its location. What was kept under the location moves to the id the
 * first time the repository shows one, so nothing loaded before the migration is forgotten.
 */
function stateKey(state: State, catalog: Catalog, loc: string): string {
  if (!catalog.repository) return loc;
  const key = `repository:${catalog.repository}`;
  if (state.catalogSequence[key] === undefined && state.catalogSequence[loc] !== undefined) {
    state.catalogSequence[key] = state.catalogSequence[loc]!;
    state.loaded[key] = { ...state.loaded[loc] };
  }
  return key;
}

/**
 * The catalog, and with --trust its signature checked. A producer writes the catalog, then its
 * signature: a reader in between sees a mismatch, so a mismatch is read again once before refusal.
 */
async function readTrustedCatalog(repo: Repository, opts: PullOptions): Promise<{ catalog: Catalog; bytes: Buffer }> {
  for (let attempt = 0; ; attempt++) {
    const got = await repo.readCatalog(opts.signal);
    if (!got) throw new TarportError('NOT_FOUND', `${repo.location} holds no catalog (tarport/catalog.json): not a tarport repository, or nothing was pushed yet`);
    if (!opts.trust?.length) return got;
    try {
      await verifyDetached(got.bytes, await repo.readCatalogSignature(got, opts.signal), opts.trust, `catalog of ${repo.location}`);
      return got;
    } catch (e) {
      if (attempt >= 1) throw e;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/** Removes the images a tag had before, beyond the newest `keep`; an image in use stays. */
async function retire(docker: Runtime, loaded: { previous: string[]; keptSaid?: string[] | undefined }, ref: string, keep: number, emit: (e: PullEvent) => void, save: () => Promise<void>): Promise<void> {
  const old = loaded.previous.slice(keep);
  if (old.length === 0) return;
  const kept: string[] = loaded.previous.slice(0, keep);
  // an image kept is said once, when first kept, not on every later run that tries it again
  const said = new Set(loaded.keptSaid ?? []);
  const keepSaying = (id: string, message: string) => {
    kept.push(id);
    if (!said.has(id)) emit({ kind: 'warning', message });
    said.add(id);
  };
  for (const id of old) {
    try {
      const r = await docker.removeImage(id);
      if (r.removed) emit({ kind: 'removed-image', ref, imageId: id });
      // the other name may be one of ours that moves later: tried again next time
      if (r.namedAs) keepSaying(id, `kept ${id.slice(0, 19)}, an earlier image of ${ref}: it is still named ${r.namedAs.join(', ')}; tried again on later runs`);
    } catch (e) {
      // in use by a container, or shared: tried again next time
      keepSaying(id, `could not remove ${id.slice(0, 19)}, an earlier image of ${ref}: ${e instanceof Error ? e.message : String(e)}; tried again on later runs`);
    }
  }
  const keptSaid = kept.filter((id) => said.has(id));
  const changed = kept.length !== loaded.previous.length || keptSaid.length !== (loaded.keptSaid ?? []).length;
  loaded.previous = kept;
  loaded.keptSaid = keptSaid;
  if (changed) await save();
}

const layerPath = (diffId: string) => `${hexOf(diffId)}/layer.tar`;

interface Loaded {
  readonly imageId: string;
  readonly bytesFetched: number;
  /** The runtime took a thin archive (it keeps layers itself). */
  readonly thin: boolean;
  /** How the image went in, when not by the planned archive (Runtime.loadVerified). */
  readonly via?: string;
  /** The platform of the image loaded (os/arch[/variant]), when its config names one. */
  readonly platform?: string;
  /** A root file system the runtime made an image of another platform than the one asked. */
  readonly otherPlatform?: string;
}

async function loadImage(
  repo: Repository,
  docker: Runtime,
  cache: ObjectCache,
  verified: PinnedRecord,
  emit: (e: PullEvent) => void,
  key: DecryptionKey | undefined,
  signal?: AbortSignal,
): Promise<Loaded> {
  const record = verified.record;
  const ref = `${record.name}:${record.tag}`;
  const name = imageName(record.name, record.tag);
  // decompression threads take ~45 ms to start: the first starts now (pull() stops the spare)
  if (record.layers.some((l) => l.compression === 'zstd') && !docker.planStored) prewarmDecompressors();
  const config = await readConfig(repo, cache, record, key, signal);
  const diffIds = record.layers.map((l) => l.diffId);
  // The runtime says which layers it has (Docker's classic store: chains; containerd: blobs in its
  // content store) and which archive shape it reads; Docker's containerd store and Podman need all.
  const plan = await planLoad(docker, record, signal);
  emit({ kind: 'loading', ref, version: record.version, layers: record.layers.length, skipped: new Set(diffIds.filter((d) => plan.omit.has(d))).size });
  const fetching = layerFiles(repo, cache, record, plan, key, signal, pullsItself(docker, plan));
  const { files } = fetching;
  const made = configPlatform(JSON.parse(config.toString('utf8')));
  const platform = made ? { platform: formatRecordPlatform(made) } : {};
  const pulled = await loadVerified(docker, record, config, plan, fetching, emit, signal);
  if (pulled) return { ...pulled, ...platform };
  // The index (manifest.json, index.json) is written last: if any layer fails its check, the
  // runtime never sees it and loads nothing.
  const stored = plan.format === 'oci-layout-stored';
  const ociLayers = record.layers.map((l) => (stored ? { digest: l.digest, size: l.size, mediaType: ociLayerMediaType(l.compression) } : { digest: l.diffId, size: l.uncompressedSize }));
  const oci = plan.format !== 'docker-save' ? writeOciLoadArchive({ configDigest: record.contentKey, config, imageName: name.qualified, layers: ociLayers, files }) : undefined;
  const archive = oci?.stream ?? writeLoadArchive({ configDigest: record.contentKey, config, repoTags: [plan.qualifiedNames ? name.qualified : name.familiar], layerPaths: diffIds.map(layerPath), files });
  try {
    await docker.load(archive, name, signal, fetching.fetched);
  } catch (e) {
    // a runtime that failed midway only paused the archive (see closedOnFailure)
    archive.destroy();
    // a layer that could not be fetched or failed its digest stopped the archive: that fault (its
    // code decides exit and retry), not the runtime's report of a broken stream
    throw (await fetching.stop()) ?? e;
  }
  const bytesFetched = await fetching.done;
  const imageId = await docker.verify({ name, configDigest: record.contentKey, diffIds, ...(oci ? { manifestDigest: oci.manifestDigest } : {}) }, signal);
  return { imageId, bytesFetched: bytesFetched + config.length, thin: plan.thin, ...platform };
}

/**
 * A runtime that fetches the layers from tarport itself (Podman: a pull from tarport's loopback
 * registry) reads the same files an archive would carry, as they are fetched into the cache and
 * checked. When it cannot, a warning says why, and the caller loads the archive as planned (the
 * files open again, from the cache). A failed fetch is that fault, never a reason to fall back.
 */
async function loadVerified(docker: Runtime, record: ReleaseRecord, config: Buffer, plan: LoadPlan, fetching: LayerFetching, emit: (e: PullEvent) => void, signal?: AbortSignal): Promise<Loaded | undefined> {
  if (!docker.loadVerified || !pullsItself(docker, plan)) return undefined;
  const stored = plan.format === 'oci-layout-stored';
  const byName = new Map(fetching.files.map((f) => [f.name, f]));
  const layers = record.layers.map((l) => {
    const digest = stored ? l.digest : l.diffId;
    const file = byName.get(ociBlobPath(digest))!;
    return { digest, size: file.size, mediaType: ociLayerMediaType(stored ? l.compression : 'none'), open: file.open };
  });
  const name = imageName(record.name, record.tag);
  let r: VerifiedLoad;
  try {
    r = await docker.loadVerified({ config, configDigest: record.contentKey, layers }, name, signal, fetching.fetched);
  } catch (e) {
    throw (await fetching.stop()) ?? e;
  }
  const bytesFetched = await fetching.done; // a failed fetch throws here, loaded or not
  if (!r.loaded) {
    emit({ kind: 'warning', message: `${record.name}:${record.tag} v${record.version}: ${r.reason}; uploading the image to ${docker.kind} as an archive instead` });
    return undefined;
  }
  const imageId = await docker.verify({ name, configDigest: record.contentKey, diffIds: record.layers.map((l) => l.diffId), manifestDigest: r.manifestDigest }, signal);
  return { imageId, bytesFetched: bytesFetched + config.length, thin: plan.thin, via: r.via };
}

/**
 * Whether the runtime will try to fetch the layers from tarport itself (loadVerified): it then asks
 * only for the layers it lacks, as a runtime that takes thin archives leaves them out.
 */
function pullsItself(docker: Runtime, plan: LoadPlan): boolean {
  return docker.loadVerified !== undefined && plan.format !== 'docker-save' && plan.omit.size === 0;
}

/** The runtime's plan: one that takes layers as stored is offered them when none is encrypted. */
function planLoad(docker: Runtime, record: ReleaseRecord, signal?: AbortSignal): Promise<LoadPlan> {
  if (docker.planStored && !record.layers.some((l) => l.encryption)) return docker.planStored(record.layers.map((l) => ({ diffId: l.diffId, digest: l.digest })), signal);
  return docker.plan(record.layers.map((l) => l.diffId), signal);
}

/** The image config, decrypted, checked against the record's image ID and layers. */
async function readConfig(repo: Repository, cache: ObjectCache, record: ReleaseRecord, key: DecryptionKey | undefined, signal?: AbortSignal): Promise<Buffer> {
  const ref = `${record.name}:${record.tag}`;
  if (!record.config) throw new TarportError('INTEGRITY', `${ref} v${record.version}: image release without a config`);
  // a prefetch (fetchOnly) left the config in the cache, verified: no request for it then
  const stored = record.config.size <= MAX_SMALL_BLOB_BYTES && (await cache.has(record.config)) ? await readAll(cache.open(record.config.digest)) : await repo.readSmallBlob(record.config, `config of ${ref}`, signal);
  const config = record.config.encryption ? await decryptConfig(stored, needKey(key, record), `config of ${ref}`) : stored;
  if (sha256(config) !== record.contentKey) {
    throw new TarportError('INTEGRITY', `${ref} v${record.version}: the config's digest ${sha256(config)} is not the image ID ${record.contentKey} the record names`);
  }
  const diffIds = record.layers.map((l) => l.diffId);
  const cfgDiffIds = configDiffIds(config, `${ref} v${record.version}`);
  if (cfgDiffIds.length !== diffIds.length || cfgDiffIds.some((d, i) => d !== diffIds[i])) {
    throw new TarportError('INTEGRITY', `${ref} v${record.version}: the record's layers do not match the image config's diff_ids`);
  }
  return config;
}

/** The layer files of a load archive, and the fetches behind them (see layerFiles). */
interface LayerFetching {
  readonly files: LoadFile[];
  /** Bytes read from the repository, once every fetch ended (each file opened waits for its own). */
  readonly done: Promise<number>;
  /** Stops the fetches still running and waits for them; the first fault of a fetch, if one failed. */
  stop(): Promise<unknown>;
  /** Bytes the downloads have written into the cache so far (the runtime's idle bound counts them as life). */
  readonly fetched: Fetched;
}

/**
 * The layer files of a load archive: each layer the plan does not leave out, once, fetched into the
 * cache and read from it as it downloads; the cache holds back the object's last byte until the
 * whole matched its digest (Download in cache.ts), so the layer cannot end before that. From a
 * local repository, when the runtime takes thin archives or pulls the layers itself (`pulls`,
 * Podman), the object is read in place instead, its digest checked on the way, and the layer's
 * last bytes wait for that check (openLayer). Either way a mismatch fails the stream before the
 * archive's index or the end of the blob, and the runtime loads nothing. (A runtime that needs
 * every layer from an archive keeps them in the cache: a later stick may carry only a difference.
 * One that pulls asks only for the layers it lacks, and those it lacks a stick must carry.) A pull
 * reads in place what it asks for only:
 * `done` counts those bytes. Encrypted objects always go through the cache: ciphertext is checked
 * before it is decrypted, so an encrypted layer's file opens once its object is in the cache. The
 * fetches run one after another in the background, from the start and in the archive's order;
 * for a runtime that pulls, each is asked for when the runtime asks for its layer, so a layer it
 * has from elsewhere is never downloaded, and of those asked for the earliest in the archive goes
 * next (FetchChain).
 */
function layerFiles(
  repo: Repository,
  cache: ObjectCache,
  record: ReleaseRecord,
  plan: LoadPlan,
  key: DecryptionKey | undefined,
  signal?: AbortSignal,
  pulls = false,
): LayerFetching {
  const ref = `${record.name}:${record.tag}`;
  const direct = (plan.thin || pulls) && repo.isLocal && !record.layers.some((l) => l.encryption);
  // what a pull read in place (it asks only for what it lacks)
  let readInPlace = 0;
  // in place: a pull's object that is one local file is fed from it, checked on the way (openLayer)
  const readPlaced = async (l: LayerDescriptor): Promise<Readable | ObjectFile> => {
    if (!pulls) return repo.readBlob(l, { signal });
    const file = await repo.localObjectFile(l.digest, signal);
    return file === undefined ? repo.readBlob(l, { signal }) : { file, expect: { digest: l.digest, size: l.size, what: `object ${l.digest} in ${repo.location}` } };
  };
  // the objects as stored go to the runtime as they are (planLoad offers that for unencrypted layers only)
  const stored = plan.format === 'oci-layout-stored';
  if (stored && record.layers.some((l) => l.encryption)) throw new TarportError('INTERNAL', `internal error: ${ref}: encrypted layers planned to go as stored`);
  // a runtime that pulls asks for its layers over separate requests a few ms apart: gathered, the
  // earliest of them downloads first
  const fetches = new FetchChain(repo, cache, signal, pulls ? GATHER_MS : 0);
  const files: LoadFile[] = [];
  const included = new Set<string>();
  for (const l of record.layers) {
    if (plan.omit.has(l.diffId) || included.has(l.diffId)) continue;
    included.add(l.diffId);
    const download = direct ? undefined : fetches.follow(l);
    // a plain layer is read as it downloads (its last byte waits for its digest: Download in cache.ts)
    const followed = l.encryption ? undefined : download;
    // all start at once, in the archive's order; a runtime that pulls starts a layer's fetch when
    // it asks for it, so a layer it has from elsewhere is not downloaded
    const place = files.length;
    let fetched: Promise<number> | undefined = download ? (pulls ? undefined : fetches.start(l, download, place)) : Promise.resolve(0);
    const fetching = () => (fetched ??= fetches.start(l, download!, place));
    // read in place: a thin load reads each such object whole (a pull's count is readInPlace)
    if (!download && !pulls) fetches.count(l.size);
    files.push({
      name: plan.format === 'docker-save' ? layerPath(l.diffId) : ociBlobPath(stored ? l.digest : l.diffId),
      size: stored ? l.size : l.uncompressedSize,
      // The runtime checks each layer's diff_id itself as it applies it (moby's "invalid diffID for
      // layer"; containerd's content store checks each blob's digest), so we check the uncompressed
      // size only and spare a hash pass.
      open: async () => {
        const f = fetching();
        if (followed) await followed.started;
        else await f;
        if (direct && pulls) readInPlace += l.size;
        // as stored: the runtime decompresses; read in place, the digest is checked on the way
        if (stored) return direct ? await repo.readBlob(l, { signal }) : followed ? followed.stream(signal) : cache.open(l.digest);
        const what = `layer ${l.diffId} of ${ref}`;
        // the decoder's buffers go back to it once a reader that can say so is done with them
        let release: ((chunk: Buffer) => void) | undefined;
        // in this thread unless the decompression thread is turned on (threadedDecompressor): a
        // thread per layer cost more CPU to start and to hand buffers across than it took off this
        // one (Podman's pull reading 5 layers at once, 400 MiB: 3.3 CPU s against 1.4)
        const decoding = async (c: Compression) => {
          const d = await threadedDecompressor(c);
          release = releaserOf(d);
          return d;
        };
        const out = direct
          ? await openLayer(await readPlaced(l), l, undefined, what, decoding, (e) => digestFirst(repo, l, e, signal))
          : await openLayer(followed ? { ...cache.file(l.digest), growing: followed } : cache.file(l.digest), l, l.encryption ? needKey(key, record) : undefined, what, decoding);
        return release ? Object.assign(out, { release }) : out;
      },
    });
  }
  return {
    files,
    // read once the load is over: by then a pull has fetched, or read in place, all it asked for
    get done() {
      return fetches.done.then((n) => n + readInPlace);
    },
    stop: () => fetches.stop(),
    fetched: () => fetches.written(),
  };
}

/** The image config's diff_ids; a config that is no JSON object with them is an integrity fault (exit 3, skipped), not a crash retried each round. */
function configDiffIds(config: Buffer, what: string): unknown[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(config.toString('utf8'));
  } catch (e) {
    throw new TarportError('INTEGRITY', `${what}: the image config is not valid JSON (${messageOf(e)})`);
  }
  const ids = (parsed as { rootfs?: { diff_ids?: unknown } } | null)?.rootfs?.diff_ids;
  if (ids === undefined) return [];
  if (!Array.isArray(ids)) throw new TarportError('INTEGRITY', `${what}: the image config's rootfs.diff_ids is not a list`);
  return ids;
}

/** How long the first layer a pulling runtime asks for waits for the requests that come with it. */
const GATHER_MS = 20;

/**
 * The fault to report for an object read in place whose decoding failed: bytes that do not match
 * their digest are a digest fault (a refusal, exit 3) whatever the decompressor made of them; the
 * digest is checked by reading the local object to its end.
 */
async function digestFirst(repo: Repository, l: LayerDescriptor, fault: unknown, signal?: AbortSignal): Promise<unknown> {
  if (!(fault instanceof CodecError)) return fault;
  try {
    await pipeline(await repo.readBlob(l, { signal }), new Writable({ write: (_c, _e, cb) => cb() }), { signal });
  } catch (e) {
    if (e instanceof TarportError && e.code === 'DIGEST_MISMATCH') return e;
  }
  return fault;
}

async function importRootfs(repo: Repository, docker: Runtime, cache: ObjectCache, verified: PinnedRecord, platform: Platform, key: DecryptionKey | undefined, signal?: AbortSignal): Promise<Loaded> {
  const record = verified.record;
  const ref = `${record.name}:${record.tag}`;
  const l = record.layers[0]!;
  if (record.layers.length !== 1) throw new TarportError('INTEGRITY', `${ref} v${record.version}: a rootfs release has exactly one object`);
  const bytesFetched = await cache.ensure(repo, l, signal);
  // docker import would create the image as soon as the tar ends, before a stream error at its very
  // end could stop it: check the uncompressed digest in a pass of its own first.
  // decrypted (the MDC checked before the end) and decompressed, capped at the declared size
  const plain = () => openLayer(cache.file(l.digest), l, l.encryption ? needKey(key, record) : undefined, `root file system of ${ref}`, async (c) => decompressor(c));
  const d = new Digester();
  await pipeline(await plain(), d, new Writable({ write: (_c, _e, cb) => cb() }), { signal });
  if (d.digest() !== l.diffId || d.bytes !== l.uncompressedSize) {
    throw new TarportError('DIGEST_MISMATCH', `${ref} v${record.version}: the root file system's digest is ${d.digest()}, the record says ${l.diffId}`);
  }
  const rootfs = plain;
  const name = imageName(record.name, record.tag);
  const plan = await docker.plan([l.diffId], signal);
  if (plan.format !== 'oci-layout') {
    const made = await closedOnFailure(await rootfs(), (s) => docker.importRootfs(s, name, platform, signal));
    // the runtime's word is the image it made, not where it put it: the name must lead to that image
    const named = await docker.imageId(name, signal);
    if (named !== made.imageId) throw new TarportError('DAEMON', `${ref} v${record.version}: the ${docker.kind} runtime imported the root file system as ${made.imageId}, but ${name.familiar} names ${named ?? 'no image'}`);
    const asked = made.asked ?? platform;
    const why = docker.kind === 'docker' ? 'it ignored the platform: Docker 20.10 takes it only with its experimental features on' : 'it ignored the platform';
    const otherPlatform = samePlatform(made.platform, asked) ? undefined : `${ref} v${record.version}: the ${docker.kind} runtime made the root file system an image for ${formatPlatform(made.platform)}, not for the ${formatPlatform(asked)} asked (${why}); it is loaded as that`;
    return { imageId: made.imageId, bytesFetched, thin: false, platform: formatPlatform(made.platform), ...(otherPlatform ? { otherPlatform } : {}) };
  }
  // a runtime without an import of its own (containerd) gets the image docker import would make:
  // one layer and a config for this platform
  const config = rootfsConfig(l.diffId, platform);
  const files = plan.omit.has(l.diffId) ? [] : [{ name: ociBlobPath(l.diffId), size: l.uncompressedSize, open: rootfs }];
  const archive = writeOciLoadArchive({ configDigest: sha256(config), config, imageName: name.qualified, layers: [{ digest: l.diffId, size: l.uncompressedSize }], files });
  const made = await closedOnFailure(archive.stream, (s) => docker.importRootfs(s, name, platform, signal));
  const imageId = await docker.verify({ name, configDigest: sha256(config), diffIds: [l.diffId], manifestDigest: archive.manifestDigest }, signal);
  return { imageId, bytesFetched, thin: plan.thin, platform: formatPlatform(made.platform) };
}

/**
 * Hands `stream` to a runtime; when that fails, closes it: a runtime that failed midway only paused
 * it, and what feeds it (a layer's file, a decompressor) would wait for a reader for ever.
 */
async function closedOnFailure<T>(stream: Readable, use: (s: Readable) => Promise<T>): Promise<T> {
  try {
    return await use(stream);
  } catch (e) {
    stream.destroy();
    throw e;
  }
}

/** The config `docker import` writes for a root file system, without the time (so it is the same each time). */
function rootfsConfig(diffId: string, platform: Platform): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: {},
      rootfs: { type: 'layers', diff_ids: [diffId] },
      history: [{ created_by: 'tarport: imported root file system' }],
    }),
  );
}

/** Every object a release needs, into the cache (each verified on the way); nothing is decrypted. */
async function fetchRelease(repo: Repository, cache: ObjectCache, record: ReleaseRecord, signal?: AbortSignal): Promise<{ objects: number; bytesFetched: number }> {
  for (const c of [record.config, ...(record.index?.platforms.map((p) => p.config) ?? [])]) {
    if (c && c.size > MAX_SMALL_BLOB_BYTES) {
      throw new TarportError('INTEGRITY', `${record.name}:${record.tag} v${record.version}: its config is ${c.size} bytes, more than the ${MAX_SMALL_BLOB_BYTES} allowed`);
    }
  }
  // a multi-platform release without a chosen platform: every platform's config and layers
  const configs = [...(record.config ? [record.config] : []), ...(record.index?.platforms.map((p) => p.config) ?? [])];
  const objects = [...configs, ...record.layers];
  const unique = [...new Map(objects.map((o) => [o.digest, o])).values()];
  let bytesFetched = 0;
  for (const o of unique) bytesFetched += await cache.ensure(repo, o, signal);
  return { objects: unique.length, bytesFetched };
}

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function needKey(key: DecryptionKey | undefined, record: ReleaseRecord): DecryptionKey {
  if (key) return key;
  const to = record.layers.find((l) => l.encryption)?.encryption?.recipients ?? record.config?.encryption?.recipients ?? [];
  throw new TarportError('USAGE', `${record.name}:${record.tag} v${record.version} is encrypted (to ${to.join(', ')}): pass --decrypt-key FILE`);
}


export type { State };
