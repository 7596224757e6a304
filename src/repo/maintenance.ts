import { DigestCheck } from '../crypto/index.js';
import { messageOf } from '../errors.js';
import { BLOBS_FOLDER, CATALOG_KEY, isTempName, recordKey, releaseFolder } from './layout.js';
import type { ReleaseRecord } from './records.js';
import { signatureKey, type ReleaseRef, type Repository } from './repository.js';

export interface Fault {
  readonly what: string;
  readonly problem: string;
}

/** Checks a signature (injected: repo/ knows no OpenPGP); throws when it does not hold. */
export type CheckSignature = (data: Buffer, signature: Buffer | undefined, what: string) => Promise<unknown>;

export interface CheckResult {
  releases: number;
  objects: number;
  bytes: number;
  faults: Fault[];
}

/**
 * Verifies a whole repository: the catalog and its pins, every record (name, path, digest, and its
 * signature when `verify` is given), and every object a record names (present, right size, right
 * digest, parts included). Reads every byte once.
 */
export async function checkRepository(repo: Repository, opts: { verify?: CheckSignature; signal?: AbortSignal } = {}): Promise<CheckResult> {
  const faults: Fault[] = [];
  const fault = (what: string, problem: string) => faults.push({ what, problem });
  const result: CheckResult = { releases: 0, objects: 0, bytes: 0, faults };
  let catalog;
  try {
    const got = await repo.readCatalog(opts.signal);
    catalog = got?.catalog;
    if (!got) fault(CATALOG_KEY, 'missing');
    else if (opts.verify) await opts.verify(got.bytes, await repo.readSignature(CATALOG_KEY, opts.signal), 'catalog').catch((e: unknown) => fault(CATALOG_KEY, messageOf(e)));
    if (got && Date.parse(got.catalog.expires) < Date.now()) fault(CATALOG_KEY, `expired at ${got.catalog.expires}`);
  } catch (e) {
    fault(CATALOG_KEY, messageOf(e));
  }
  const objects = new Map<string, { size: number; where: string }>();
  for (const { name, tag } of await repo.listTags(opts.signal)) {
    const refs = await repo.listReleases(name, tag, opts.signal);
    const pinned = catalog?.releases.find((e) => e.name === name && e.tag === tag);
    if (!pinned && refs.length > 0) fault(`${name}:${tag}`, 'has releases but no catalog entry (run a publish to rebuild the catalog)');
    for (const ref of refs) {
      result.releases++;
      const where = `${name}:${tag} v${ref.version} (${recordKey(name, tag, ref.record)})`;
      let record: ReleaseRecord;
      try {
        const r = await repo.readRecord(ref, pinned?.record === ref.record ? { digest: pinned.digest, size: pinned.size } : undefined, opts.signal);
        record = r.record;
        if (opts.verify) await opts.verify(r.bytes, await repo.readSignature(recordKey(name, tag, ref.record), opts.signal), where).catch((e: unknown) => fault(where, messageOf(e)));
      } catch (e) {
        fault(where, messageOf(e));
        continue;
      }
      for (const d of [...record.layers, ...(record.config ? [record.config] : []), ...(record.manifest ? [record.manifest] : [])]) {
        if (!objects.has(d.digest)) objects.set(d.digest, { size: d.size, where });
      }
    }
  }
  for (const [digest, { size, where }] of objects) {
    opts.signal?.throwIfAborted();
    result.objects++;
    try {
      // one hash on the way, over buffers the transport lends (no stream per chunk)
      const check = new DigestCheck({ digest, size }, `object ${digest} in ${repo.location}`);
      await repo.readBlobTo({ digest, size }, (c) => check.update(c), opts.signal ? { signal: opts.signal } : {});
      check.finish();
      result.bytes += check.bytes;
    } catch (e) {
      fault(`object ${digest} (named by ${where})`, messageOf(e));
    }
  }
  return result;
}

export interface GcResult {
  releasesRemoved: string[];
  objectsRemoved: string[];
  bytesFreed: number;
  temporaryRemoved: string[];
}

/**
 * Keeps the newest `keep` releases of every tag and removes the rest, then every object no kept
 * record names, and temporary files left by interrupted writes. Objects and temporary files younger
 * than `graceMs` stay: a producer may be between renaming its objects and writing its record.
 */
export async function collectGarbage(repo: Repository, opts: { keep: number; dryRun: boolean; graceMs: number; signal?: AbortSignal }): Promise<GcResult> {
  const result: GcResult = { releasesRemoved: [], objectsRemoved: [], bytesFreed: 0, temporaryRemoved: [] };
  const referenced = new Set<string>();
  const catalog = (await repo.readCatalog(opts.signal))?.catalog;
  const old = (mtime: Date | undefined) => mtime !== undefined && Date.now() - mtime.getTime() > opts.graceMs;
  for (const { name, tag } of await repo.listTags(opts.signal)) {
    const refs = await repo.listReleases(name, tag, opts.signal);
    const current = catalog?.releases.find((e) => e.name === name && e.tag === tag)?.record;
    const keep = new Set(refs.slice(-Math.max(1, opts.keep)).map((r) => r.record));
    if (current) keep.add(current); // never the release the catalog names
    for (const ref of refs) {
      if (keep.has(ref.record)) {
        const { record } = await repo.readRecord(ref, undefined, opts.signal);
        for (const d of [...record.layers, ...(record.config ? [record.config] : []), ...(record.manifest ? [record.manifest] : [])]) referenced.add(d.digest);
        continue;
      }
      result.releasesRemoved.push(`${name}:${tag} v${ref.version}`);
      if (!opts.dryRun) await removeRelease(repo, ref);
    }
    for await (const f of repo.transport.list(releaseFolder(name, tag), opts.signal)) {
      if (isTempName(f.name) && old(f.mtime)) {
        result.temporaryRemoved.push(`${releaseFolder(name, tag)}/${f.name}`);
        if (!opts.dryRun) await repo.transport.remove(`${releaseFolder(name, tag)}/${f.name}`, opts.signal);
      }
    }
  }
  for await (const f of repo.transport.list(BLOBS_FOLDER, opts.signal)) {
    if (f.isDir) continue;
    const key = `${BLOBS_FOLDER}/${f.name}`;
    if (isTempName(f.name)) {
      if (old(f.mtime)) {
        result.temporaryRemoved.push(key);
        if (!opts.dryRun) await repo.transport.remove(key, opts.signal);
      }
      continue;
    }
    const hex = /^([0-9a-f]{64})(?:\.parts|\.p\d{4})?$/.exec(f.name)?.[1];
    if (!hex || referenced.has(`sha256:${hex}`) || !old(f.mtime)) continue;
    if (f.name === hex) result.objectsRemoved.push(`sha256:${hex}`);
    result.bytesFreed += f.size;
    if (!opts.dryRun) await repo.transport.remove(key, opts.signal);
  }
  return result;
}

async function removeRelease(repo: Repository, ref: ReleaseRef): Promise<void> {
  const key = recordKey(ref.name, ref.tag, ref.record);
  await repo.transport.remove(key);
  await repo.transport.remove(signatureKey(key));
}
