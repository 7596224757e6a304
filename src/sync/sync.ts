import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestCheck, Verifier } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import {
  CATALOG_KEY,
  blobKey,
  compareReleases,
  recordKey,
  signatureKey,
  tempKeyFor,
  type CatalogEntry,
  type Descriptor,
  type ReleaseRecord,
  type Repository,
  type Sign,
} from '../repo/index.js';
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
}

export type SyncEvent =
  /** What the objects of the selected releases add up to (before anything is known to be there). */
  | { kind: 'plan'; objects: number; bytes: number }
  /** Progress: this many more bytes of objects are done (copied, or found in place). */
  | { kind: 'bytes'; bytes: number }
  | { kind: 'object'; digest: string; size: number; status: 'copied' | 'present' | 'repaired' | 'site-has-it' }
  | { kind: 'release'; ref: string; version: number; status: 'copied' | 'present' | 'site-has-it' }
  | { kind: 'catalog'; status: 'copied' | 'merged' | 'unchanged'; signed: boolean }
  | { kind: 'warning'; message: string };

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
  const emit = opts.onEvent ?? (() => undefined);
  const result: SyncResult = { objectsCopied: 0, bytesCopied: 0, objectsRepaired: 0, releasesCopied: 0 };
  const got = await src.readCatalog(opts.signal);
  if (!got) throw new TarportError('NOT_FOUND', `${src.location} holds no catalog: nothing to sync`);
  const srcCatalog = got.catalog;
  const srcCatalogSig = await src.readSignature(CATALOG_KEY, opts.signal);
  const dstCatalog = (await dst.readCatalog(opts.signal))?.catalog;
  const entries = srcCatalog.releases.filter((e) => selected(opts.only, e));
  const siteHasDiff = new Set(opts.have?.diffIds ?? []);
  const siteHasObject = new Set(opts.have?.objects ?? []);
  const copiedObjects = new Set<string>();

  /** A pass-through that reports the bytes it passes as progress. */
  const counted = () =>
    new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _e, cb) {
        emit({ kind: 'bytes', bytes: chunk.length });
        cb(null, chunk);
      },
    });
  const local = src.transport.localPath !== undefined && dst.transport.localPath !== undefined;
  const copier = local ? new LocalCopier(opts.signal) : undefined;
  const copyObject = async (d: Descriptor & { diffId?: string }, lane: number) => {
    if (copiedObjects.has(d.digest)) return;
    copiedObjects.add(d.digest);
    if (siteHasObject.has(d.digest) || (d.diffId && siteHasDiff.has(d.diffId))) {
      emit({ kind: 'bytes', bytes: d.size });
      emit({ kind: 'object', digest: d.digest, size: d.size, status: 'site-has-it' });
      return;
    }
    const have = await dst.blobInfo(d.digest, opts.signal);
    let repairing = false;
    if (have && have.size === d.size) {
      const intact = !dst.transport.capabilities.local
        ? true
        : copier && !have.split
          ? await copier.check(lane, dst.transport.localPath!(blobKey(d.digest)), d, `object ${d.digest} in ${dst.location}`)
          : await digestOk(dst, d, opts.signal);
      if (intact) {
        emit({ kind: 'bytes', bytes: d.size });
        emit({ kind: 'object', digest: d.digest, size: d.size, status: 'present' });
        return;
      }
      repairing = true;
    } else if (have) repairing = true;
    const verified = async () => {
      const out = new PassThrough({ highWaterMark: 1 << 20 });
      // one check on the way (readBlob's own is off): the digest the record names
      const s = await src.readBlob(d, { signal: opts.signal, verify: false });
      pipeline(s, new Verifier(d, `object ${d.digest} from ${src.location}`), counted(), out).catch((e: unknown) => out.destroy(e as Error));
      return out;
    };
    if (opts.maxFileSize && d.size > opts.maxFileSize) {
      if (have && !have.split) await dst.transport.remove(blobKey(d.digest), opts.signal);
      await dst.putSplit(d, verified, opts.maxFileSize, opts.signal);
      result.objectsCopied++;
      result.bytesCopied += d.size;
      if (repairing) result.objectsRepaired++;
      emit({ kind: 'object', digest: d.digest, size: d.size, status: repairing ? 'repaired' : 'copied' });
      return;
    }
    const tmp = tempKeyFor(blobKey(d.digest));
    try {
      const from = copier && (await src.transport.stat(blobKey(d.digest), opts.signal)) ? src.transport.localPath!(blobKey(d.digest)) : undefined;
      if (copier && from) {
        // both ends on this host: no stream per byte, the hash runs beside the copy, one thread per lane
        await copier.copy(lane, from, dst.transport.localPath!(tmp), d, `object ${d.digest} from ${src.location}`, (n) => emit({ kind: 'bytes', bytes: n }));
      } else {
        await dst.transport.write(
          tmp,
          () => {
            const out = new PassThrough({ highWaterMark: 1 << 20 });
            void src.readBlob(d, { signal: opts.signal, verify: false }).then(
              (s) => pipeline(s, new Verifier(d, `object ${d.digest} from ${src.location}`), counted(), out).catch((e: unknown) => out.destroy(e as Error)),
              (e: unknown) => out.destroy(e as Error),
            );
            return out;
          },
          { signal: opts.signal },
        );
      }
      await dst.transport.rename(tmp, blobKey(d.digest), opts.signal);
    } catch (e) {
      await dst.transport.remove(tmp).catch(() => undefined);
      throw e;
    }
    result.objectsCopied++;
    result.bytesCopied += d.size;
    if (repairing) result.objectsRepaired++;
    emit({ kind: 'object', digest: d.digest, size: d.size, status: repairing ? 'repaired' : 'copied' });
  };

  // Records first (small), then every object they name, several at once, then the records
  // themselves: a record is never written before all of its objects are in place.
  const plan: { e: CatalogEntry; ref: string; record: ReleaseRecord; bytes: Buffer }[] = [];
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
    const { record, bytes } = await src.readRecord(e, { digest: e.digest, size: e.size }, opts.signal);
    plan.push({ e, ref, record, bytes });
  }
  const objects = plan.flatMap(({ record }) => [...record.layers, record.config, record.manifest].filter((o): o is NonNullable<typeof o> => o !== undefined));
  // largest first: the lanes end together
  objects.sort((a, b) => b.size - a.size);
  const unique = new Map(objects.map((o) => [o.digest, o.size]));
  emit({ kind: 'plan', objects: unique.size, bytes: [...unique.values()].reduce((a, b) => a + b, 0) });
  try {
    await allBounded(
      objects.map((o) => (lane: number) => copyObject(o, lane)),
      // local → local: one lane per core (hashing is the bound); remote: the connections allowed
      copier ? LocalCopier.lanes() : Math.max(1, Math.min(src.transport.capabilities.maxConnections, dst.transport.capabilities.maxConnections)),
    );
  } finally {
    await copier?.close();
  }

  const copied: CatalogEntry[] = [];
  for (const { e, ref, bytes } of plan) {
    const key = recordKey(e.name, e.tag, e.record);
    const there = await dst.transport.stat(key, opts.signal);
    if (there?.size === bytes.length) {
      emit({ kind: 'release', ref, version: e.version, status: 'present' });
    } else {
      const sig = await src.readSignature(key, opts.signal);
      if (sig) await dst.putAtomic(signatureKey(key), sig, opts.signal);
      await dst.putAtomic(key, bytes, opts.signal);
      result.releasesCopied++;
      emit({ kind: 'release', ref, version: e.version, status: 'copied' });
    }
    copied.push(e);
  }

  // The catalog: the source's own (signature and all) when it covers everything DST had; a merge
  // otherwise, signed with --sign-key when given.
  const dstEntries = dstCatalog?.releases ?? [];
  const covers =
    copied.length + siteHas === srcCatalog.releases.length &&
    dstEntries.every((d) => srcCatalog.releases.some((s) => s.name === d.name && s.tag === d.tag && compareReleases(s, d) >= 0)) &&
    (dstCatalog?.sequence ?? 0) <= srcCatalog.sequence;
  if (covers) {
    await dst.putAtomic(CATALOG_KEY, got.bytes, opts.signal);
    if (srcCatalogSig) await dst.putAtomic(signatureKey(CATALOG_KEY), srcCatalogSig, opts.signal);
    else await dst.transport.remove(signatureKey(CATALOG_KEY), opts.signal);
    await dst.writeIndex(srcCatalog, opts.signal);
    emit({ kind: 'catalog', status: 'copied', signed: srcCatalogSig !== undefined });
  } else if (copied.length > 0) {
    await dst.updateCatalog(copied, opts.catalogTtlMs, opts.signal, opts.sign);
    if (!opts.sign && srcCatalogSig) {
      emit({ kind: 'warning', message: `the catalog of ${dst.location} was merged and is not signed: consumers that pin keys (--trust) refuse it; sync with --sign-key, or carry every release (no --only)` });
    }
    emit({ kind: 'catalog', status: 'merged', signed: opts.sign !== undefined });
  } else {
    emit({ kind: 'catalog', status: 'unchanged', signed: false });
  }
  return result;
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
