import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestCheck, Verifier } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import {
  recordObjects,
  compareReleases,
  unstorableSegment,
  type Catalog,
  type CatalogCopy,
  type CatalogEntry,
  type Descriptor,
  type ReleaseRecord,
  type Repository,
  type Sign,
  type WriteTransaction,
  unsignedOverSignedWarning,
} from '../repo/index.js';
import { chainIds } from '../runtime/index.js';
import type { Inventory } from './inventory.js';
import { LocalCopier } from './localcopy.js';

export interface SyncOptions {
  /** Only these names (every tag) or name:tags. */
  readonly only?: readonly { name: string; tag?: string }[];
  /** Carry only what this site lacks. */
  readonly have?: Inventory;
  /** Signs the merged catalog when it cannot be copied as the source signed it. */
  readonly sign?: Sign;
  readonly catalogTtlMs: number;
  /** Objects larger than this go to DST in parts (FAT32: 4 GiB - 1). */
  readonly maxFileSize?: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: SyncEvent) => void;
  /** Create DST when it holds no repository (`--init`): it takes SRC's identity. Otherwise that is refused (NO_REPOSITORY). */
  readonly create?: boolean;
}

export type SyncEvent =
  /** What the objects of the selected releases add up to (before anything is known to be there). */
  | { kind: 'plan'; objects: number; bytes: number }
  /** Progress: this many more bytes of objects are done (copied, or found in place). */
  | { kind: 'bytes'; bytes: number }
  | { kind: 'object'; digest: string; size: number; status: 'copied' | 'present' | 'repaired' | 'site-has-it' }
  | { kind: 'release'; ref: string; version: number; status: 'copied' | 'present' | 'repaired' | 'site-has-it' }
  | { kind: 'catalog'; status: 'copied' | 'merged' | 'unchanged'; signed: boolean }
  | { kind: 'warning'; message: string }
  /** Acknowledgements of consumer hosts carried from SRC (newer than DST's). */
  | { kind: 'acks'; copied: number };

export interface SyncResult {
  objectsCopied: number;
  bytesCopied: number;
  objectsRepaired: number;
  releasesCopied: number;
}

const selected = (only: SyncOptions['only'], e: { name: string; tag: string }) =>
  !only || only.length === 0 || only.some((o) => o.name === e.name && (o.tag === undefined || o.tag === e.tag));

/**
 * Copies what DST lacks from SRC (air gap): objects first (each digest-checked on the way, under a
 * temporary name, renamed into place), then records and their signatures, then a catalog that
 * keeps what DST already had. A re-run copies only what is missing, and replaces an object whose
 * size — or, on a local DST, digest — is wrong.
 */
export async function syncRepos(src: Repository, dst: Repository, opts: SyncOptions): Promise<SyncResult> {
  const got = await src.readCatalog(opts.signal);
  if (!got) throw new TarportError('NOT_FOUND', `${src.location} holds no catalog: nothing to sync`);
  // a destination with no identity yet takes its source's: a stick carries the repository it copies
  const tx = await dst.begin({ ...(opts.signal ? { signal: opts.signal } : {}), ...(got.catalog.repository ? { adoptId: got.catalog.repository } : {}), ...(opts.create ? { create: true } : {}) });
  try {
    return await syncIn(tx, src, dst, got, opts);
  } finally {
    await tx.end();
  }
}

export interface Planned {
  readonly e: CatalogEntry;
  readonly ref: string;
  readonly record: ReleaseRecord;
  readonly bytes: Buffer;
}

/**
 * A release whose name or tag is too long for a folder (an S3 repository can hold one) cannot be
 * carried to a directory or stick: refused before anything is copied, naming it, rather than after
 * the objects, with the file system's bare "name too long".
 */
function refuseUnstorable(entries: readonly CatalogEntry[], dst: Repository): void {
  if (!dst.isLocal) return;
  for (const e of entries) {
    const why = unstorableSegment(e);
    if (why) throw new TarportError('BAD_INPUT', `${e.name}:${e.tag} cannot be carried to ${dst.location}: ${why}; leave it out with --only`);
  }
}

/**
 * Stage 1: the records of the selected releases (small), each checked against the source catalog's
 * pin. A record the source lacks while DST holds it (a stick made with --have left out what the
 * site had, and is now synced into the site's repository) is DST's already: nothing to carry.
 */
async function planReleases(src: Repository, dst: Repository, entries: readonly CatalogEntry[], opts: SyncOptions, emit: (e: SyncEvent) => void): Promise<{ plan: Planned[]; siteHas: number }> {
  const plan: Planned[] = [];
  let siteHas = 0;
  for (const e of entries) {
    opts.signal?.throwIfAborted();
    const ref = `${e.name}:${e.tag}`;
    if (opts.have?.releases[ref]?.includes(e.digest)) {
      // the site loaded this very release: its catalog entry is enough, it will say "up to date"
      siteHas++;
      emit({ kind: 'release', ref, version: e.version, status: 'site-has-it' });
      continue;
    }
    const got = await src.readRecord(e, { digest: e.digest, size: e.size }, opts.signal ? { signal: opts.signal } : {}).catch(async (err: unknown) => {
      if ((err as { code?: string }).code !== 'NOT_FOUND' || !(await dst.listReleases(e.name, e.tag, opts.signal)).some((r) => r.record === e.record)) throw err;
      return undefined;
    });
    if (!got) {
      siteHas++;
      emit({ kind: 'release', ref, version: e.version, status: 'present' });
      continue;
    }
    plan.push({ e, ref, record: got.record, bytes: got.bytes });
  }
  return { plan, siteHas };
}

async function syncIn(tx: WriteTransaction, src: Repository, dst: Repository, got: CatalogCopy, opts: SyncOptions): Promise<SyncResult> {
  const emit = opts.onEvent ?? (() => undefined);
  const result: SyncResult = { objectsCopied: 0, bytesCopied: 0, objectsRepaired: 0, releasesCopied: 0 };
  const srcCatalog = got.catalog;
  const srcCatalogSig = await src.readCatalogSignature(got, opts.signal);
  const entries = srcCatalog.releases.filter((e) => selected(opts.only, e));
  // an --only that names nothing there (a typo) is said, as pull says it of a subscription
  for (const o of opts.only ?? []) {
    if (!srcCatalog.releases.some((e) => selected([o], e))) emit({ kind: 'warning', message: `--only ${o.name}${o.tag ? ':' + o.tag : ''} is not in the catalog of ${src.location}` });
  }
  refuseUnstorable(entries, dst);
  const { plan, siteHas } = await planReleases(src, dst, entries, opts, emit);
  await copyObjects(tx, src, dst, plan, opts, emit, result);

  // Records, once every object they name is in place.
  const copied: CatalogEntry[] = [];
  for (const { e, ref, bytes } of plan) {
    const listed = (await dst.listReleases(e.name, e.tag, opts.signal)).some((r) => r.record === e.record);
    if (listed && (await dst.recordIntact(e, opts.signal))) {
      emit({ kind: 'release', ref, version: e.version, status: 'present' });
    } else {
      // missing, or there but not what the catalog pins (a damaged stick): written whole again
      await tx.copyRecord(e, bytes, await src.readRecordSignature(e, opts.signal));
      result.releasesCopied++;
      emit({ kind: 'release', ref, version: e.version, status: listed ? 'repaired' : 'copied' });
    }
    copied.push(e);
  }
  // what the hosts of SRC's side loaded travels too (a stick brought back to the high side)
  const acks = await tx.carryAcks((await src.readAcks(opts.signal)).acks);
  if (acks > 0) emit({ kind: 'acks', copied: acks });
  await syncCatalog(tx, dst, got, srcCatalogSig, copied.length + siteHas === srcCatalog.releases.length, acks > 0, opts, emit);
  return result;
}

/**
 * The catalog: the source's own (signature and all) when DST is the same repository and it names
 * every tag's newest release in DST; otherwise rebuilt from DST's releases/, signed with --sign-key
 * when given, at a sequence above the source's.
 */
async function syncCatalog(tx: WriteTransaction, dst: Repository, got: CatalogCopy, sig: Buffer | undefined, everything: boolean, acksCarried: boolean, opts: SyncOptions, emit: (e: SyncEvent) => void): Promise<void> {
  const src = got.catalog;
  const dstCatalog = (await dst.readCatalog(opts.signal))?.catalog;
  const sameRepository = src.repository === undefined || src.repository === tx.repositoryId;
  const truthCovered = everything && sameRepository && (dstCatalog?.sequence ?? 0) <= src.sequence && (await coversDestination(dst, src, opts.signal));
  if (truthCovered) {
    if (dstCatalog && dstCatalog.sequence === src.sequence && sameEntries(dstCatalog.releases, src.releases)) {
      // the catalog stays; the page shows acknowledgements, so it is written again when they came
      // (or when it lags the catalog: a sync killed before it)
      await tx.refreshDerived(dstCatalog, acksCarried);
      emit({ kind: 'catalog', status: 'unchanged', signed: sig !== undefined });
      return;
    }
    const { unsignedOverSigned } = await tx.adoptCatalog(got, sig);
    // a stick the other side wrote to, synced back: its unsigned catalog over a signed one
    if (unsignedOverSigned) emit({ kind: 'warning', message: unsignedOverSignedWarning(dst.location) });
    emit({ kind: 'catalog', status: 'copied', signed: sig !== undefined });
    return;
  }
  const r = await tx.publishCatalog({ ttlMs: opts.catalogTtlMs, ...(opts.sign ? { sign: opts.sign } : {}), minSequence: sameRepository ? src.sequence : 0 });
  if (!r.wrote) {
    if (acksCarried) await tx.refreshDerived(r.catalog);
    emit({ kind: 'catalog', status: 'unchanged', signed: false });
    return;
  }
  if (r.unsignedOverSigned) emit({ kind: 'warning', message: unsignedOverSignedWarning(dst.location) });
  else if (!opts.sign && sig) emit({ kind: 'warning', message: mergedUnsigned(dst.location, everything, dstCatalog?.sequence, src.sequence) });
  emit({ kind: 'catalog', status: 'merged', signed: opts.sign !== undefined });
}

/** Why a sync without --sign-key left DST's catalog unsigned though SRC's is signed, and what helps. */
function mergedUnsigned(location: string, everything: boolean, dstSequence: number | undefined, srcSequence: number): string {
  const why = !everything
    ? 'sync with --sign-key, or carry every release (no --only)'
    : dstSequence !== undefined && dstSequence > srcSequence
      ? `its catalog (sequence ${dstSequence}) ran ahead of the source's (${srcSequence}) with an earlier merge, so the source's signed one cannot be copied as it is until the source publishes past it; sync with --sign-key`
      : 'it holds releases the source does not name; sync with --sign-key';
  return `the catalog of ${location} was merged and is not signed: consumers that pin keys (--trust) refuse it; ${why}`;
}

/** True when every tag's newest release in DST's releases/ is what the source catalog names. */
async function coversDestination(dst: Repository, src: Catalog, signal?: AbortSignal): Promise<boolean> {
  for (const { name, tag } of await dst.listTags(signal)) {
    const newest = (await dst.listReleases(name, tag, signal)).at(-1);
    if (!newest) continue;
    const e = src.releases.find((r) => r.name === name && r.tag === tag);
    if (!e || compareReleases(e, newest) < 0) return false;
  }
  return true;
}

const sameEntries = (a: readonly CatalogEntry[], b: readonly CatalogEntry[]) =>
  a.length === b.length && a.every((x) => b.some((y) => y.name === x.name && y.tag === x.tag && y.record === x.record));

/** Stage 2: every object the planned records name, several at once, largest first. */
async function copyObjects(tx: WriteTransaction, src: Repository, dst: Repository, plan: readonly Planned[], opts: SyncOptions, emit: (e: SyncEvent) => void, result: SyncResult): Promise<void> {
  const objects = plan.flatMap(({ record }) => recordObjects(record));
  objects.sort((a, b) => b.size - a.size); // largest first: the lanes end together
  const unique = new Map(objects.map((o) => [o.digest, o.size]));
  emit({ kind: 'plan', objects: unique.size, bytes: [...unique.values()].reduce((a, b) => a + b, 0) });
  // named in DST's intent before we look at what DST holds: gc spares them while we copy
  await tx.protect(unique.keys());
  const local = src.writesLocalFiles && dst.writesLocalFiles;
  const copier = local ? new LocalCopier(opts.signal) : undefined;
  const copy = new ObjectCopy(tx, src, dst, copier, opts, emit, result, layersTheSiteHolds(plan, opts.have));
  try {
    await allBounded(
      objects.map((o) => (lane: number) => copy.one(o, lane)),
      // local → local: one lane per core (hashing is the bound); remote: the connections allowed
      copier ? LocalCopier.lanes() : Math.max(1, Math.min(src.maxConnections, dst.maxConnections)),
    );
  } finally {
    await copier?.close();
  }
}

/**
 * The layer objects the site's daemon will not ask for: Docker's classic store skips a layer only
 * when it holds its whole chain (that layer on the very layers below it), so a layer counts as held
 * when its chain ID is in the inventory, in every image of the plan that names it. A layer the site
 * holds under another base is carried. An inventory without chain IDs (a daemon on the containerd
 * store, which loads every layer, or an inventory of an older tarport) holds none.
 */
export function layersTheSiteHolds(plan: readonly Planned[], have: Inventory | undefined): Set<string> {
  const chains = new Set(have?.chainIds ?? []);
  const held = new Set<string>();
  if (chains.size === 0) return held;
  const needed = new Set<string>();
  for (const { record } of plan) {
    // an index record's own list is the union of its platforms' layers: no chain of any image
    for (const layers of record.index ? record.index.platforms.map((p) => p.layers) : [record.layers]) {
      const ids = chainIds(layers.map((l) => l.diffId));
      layers.forEach((l, i) => (chains.has(ids[i]!) ? held : needed).add(l.digest));
    }
  }
  for (const d of needed) held.delete(d);
  return held;
}

/** Copies one object at a time per lane: checks what DST holds, then copies or repairs it. */
class ObjectCopy {
  private readonly done = new Set<string>();
  private readonly siteHasObject: Set<string>;

  constructor(
    private readonly tx: WriteTransaction,
    private readonly src: Repository,
    private readonly dst: Repository,
    private readonly copier: LocalCopier | undefined,
    private readonly opts: SyncOptions,
    private readonly emit: (e: SyncEvent) => void,
    private readonly result: SyncResult,
    /** Layer objects the site's daemon holds with their whole chain (layersTheSiteHolds). */
    private readonly siteHasLayer: ReadonlySet<string>,
  ) {
    this.siteHasObject = new Set(opts.have?.objects ?? []);
  }

  /** A pass-through that reports the bytes it passes as progress. */
  private counted(): Transform {
    const emit = this.emit;
    return new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _e, cb) {
        emit({ kind: 'bytes', bytes: chunk.length });
        cb(null, chunk);
      },
    });
  }

  /** The source's bytes, checked against the digest the record names on the way. */
  private async verified(d: Descriptor): Promise<Readable> {
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    const s = await this.src.readBlob(d, { signal: this.opts.signal, verify: false });
    pipeline(s, new Verifier(d, `object ${d.digest} from ${this.src.location}`, !this.src.isLocal), this.counted(), out).catch((e: unknown) => out.destroy(e as Error));
    return out;
  }

  /** 'present' when DST holds it intact (size, and on a local DST its digest), else whether it is there at all. */
  private async state(d: Descriptor, lane: number): Promise<'present' | 'missing' | 'damaged'> {
    const have = await this.dst.blobInfo(d.digest, this.opts.signal);
    if (!have) return 'missing';
    if (have.size !== d.size) return 'damaged';
    if (!this.dst.isLocal) return 'present';
    const file = this.copier && !have.split ? await this.dst.localObjectFile(d.digest, this.opts.signal) : undefined;
    const intact = file ? await this.copier!.check(lane, file, d, `object ${d.digest} in ${this.dst.location}`) : await digestOk(this.dst, d, this.opts.signal);
    return intact ? 'present' : 'damaged';
  }

  async one(d: Descriptor, lane: number): Promise<void> {
    if (this.done.has(d.digest)) return;
    this.done.add(d.digest);
    if (this.siteHasObject.has(d.digest) || this.siteHasLayer.has(d.digest)) {
      this.emit({ kind: 'bytes', bytes: d.size });
      this.emit({ kind: 'object', digest: d.digest, size: d.size, status: 'site-has-it' });
      return;
    }
    const state = await this.state(d, lane);
    if (state === 'present') {
      this.emit({ kind: 'bytes', bytes: d.size });
      this.emit({ kind: 'object', digest: d.digest, size: d.size, status: 'present' });
      return;
    }
    if (this.opts.maxFileSize && d.size > this.opts.maxFileSize) {
      await this.tx.putSplit(d, () => this.verified(d), this.opts.maxFileSize);
    } else {
      const from = this.copier ? await this.src.localObjectFile(d.digest, this.opts.signal) : undefined;
      await this.tx.putObject(
        d.digest,
        this.copier && from
          ? // both ends on this host: no stream per byte, the hash runs beside the copy, one thread per lane
            { toLocalFile: (to) => this.copier!.copy(lane, from, to, d, `object ${d.digest} from ${this.src.location}`, (n) => this.emit({ kind: 'bytes', bytes: n })) }
          : {
              stream: () => {
                const out = new PassThrough({ highWaterMark: 1 << 20 });
                this.verified(d).then(
                  (s) => pipeline(s, out).catch((e: unknown) => out.destroy(e as Error)),
                  (e: unknown) => out.destroy(e as Error),
                );
                return out;
              },
            },
      );
    }
    this.result.objectsCopied++;
    this.result.bytesCopied += d.size;
    if (state === 'damaged') this.result.objectsRepaired++;
    this.emit({ kind: 'object', digest: d.digest, size: d.size, status: state === 'damaged' ? 'repaired' : 'copied' });
  }
}

/**
 * Runs the tasks on `n` lanes (a lane runs one task at a time and passes its number to it). After the first failure no new task starts; the ones under
 * way finish (each cleans up after itself) before the first error is thrown.
 */
async function allBounded(tasks: ((lane: number) => Promise<void>)[], n: number): Promise<void> {
  let next = 0;
  let failure: { e: unknown } | undefined;
  const worker = async (lane: number) => {
    while (!failure && next < tasks.length) {
      const t = tasks[next++]!;
      try {
        await t(lane);
      } catch (e) {
        failure ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, tasks.length) }, (_, lane) => worker(lane)));
  if (failure) throw failure.e;
}

async function digestOk(repo: Repository, d: Descriptor, signal?: AbortSignal): Promise<boolean> {
  const check = new DigestCheck(d, `object ${d.digest} in ${repo.location}`);
  try {
    await repo.readBlobTo(d, (c) => check.update(c), signal ? { signal } : {});
    check.finish();
  } catch {
    return false;
  }
  return true;
}
