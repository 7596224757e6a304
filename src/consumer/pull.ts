import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import { decompressor, prewarmDecompressors, releaseDecompressors, threadedDecompressor, writeLoadArchive, type LoadFile } from '../archive/index.js';
import { Digester, decryptStream, hexOf, sha256, verifyDetached, type DecryptionKey, type TrustedKey } from '../crypto/index.js';
import { chainIds, type DockerApi, type ImageStore } from '../docker/index.js';
import { isRefusalCode, TarportError } from '../errors.js';
import { CATALOG_KEY, recordKey, type Catalog, type CatalogEntry, type ReleaseRecord, type Repository } from '../repo/index.js';
import { ObjectCache } from './cache.js';
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
  /** Overrides the daemon's own answer (tests of the containerd-store path). */
  readonly imageStore?: ImageStore;
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
}

export type PullEvent =
  | { kind: 'up-to-date'; ref: string; version: number }
  | { kind: 'loading'; ref: string; version: number; layers: number; skipped: number }
  | { kind: 'loaded'; ref: string; version: number; imageId: string; bytesFetched: number; signer?: string }
  | { kind: 'warning'; message: string }
  | { kind: 'refused'; ref: string; version: number; digest: string; message: string; code: string }
  | { kind: 'hook'; ref: string; version: number; ok: boolean; message: string }
  | { kind: 'removed-image'; ref: string; imageId: string }
  | { kind: 'idle' };

export interface PullResult {
  readonly loaded: { ref: string; version: number; imageId: string }[];
  readonly upToDate: string[];
  readonly bytesFetched: number;
  /** True when a cheap check found the catalog unchanged and nothing else was read. */
  readonly idle: boolean;
  /** Releases refused in this run, by name:tag, with their record digest. */
  readonly refused: { ref: string; digest: string; code: string; message: string }[];
}

function subscribed(subs: readonly Subscription[], e: CatalogEntry): boolean {
  return subs.length === 0 || subs.some((s) => s.name === e.name && (s.tag === undefined || s.tag === e.tag));
}

/**
 * One consumer run: read the catalog, pick the subscribed releases that are newer than what was
 * loaded, fetch only missing objects into the cache (verified), and load them into the daemon.
 */
export async function pull(repo: Repository, docker: DockerApi, opts: PullOptions): Promise<PullResult> {
  const store = new StateStore(opts.stateDir);
  const unlock = await store.lock(opts.lockWaitMs ?? 5_000);
  try {
    return await pullLocked(repo, docker, store, opts);
  } finally {
    releaseDecompressors();
    await unlock();
  }
}

async function pullLocked(repo: Repository, docker: DockerApi, store: StateStore, opts: PullOptions): Promise<PullResult> {
  const emit = opts.onEvent ?? (() => undefined);
  const state = await store.read();
  const loc = repo.location;
  const result: PullResult = { loaded: [], upToDate: [], bytesFetched: 0, idle: false, refused: [] };
  const stat = await repo.catalogStat(opts.signal);
  if (!stat) throw new TarportError('NOT_FOUND', `${repo.location} holds no catalog (tarport/catalog.json): not a tarport repository, or nothing was pushed yet`);
  const last = state.catalogStat[loc];
  if (opts.cheap && last && last.size === stat.size && last.mtime === stat.mtime && stat.mtime !== 0) {
    emit({ kind: 'idle' });
    return { ...result, idle: true };
  }
  const got = await readTrustedCatalog(repo, opts);
  const { catalog } = got;
  const seen = state.catalogSequence[loc] ?? 0;
  if (catalog.sequence < seen) {
    throw new TarportError('ROLLBACK', `catalog of ${loc} has sequence ${catalog.sequence}, lower than ${seen} seen before: an old catalog was replayed; refusing`);
  }
  if (Date.parse(catalog.expires) < Date.now()) {
    const msg = `catalog of ${loc} expired at ${catalog.expires}`;
    if (!opts.allowExpired) throw new TarportError('EXPIRED', `${msg}; publish again to refresh it, or pass --allow-expired to load from it anyway`);
    emit({ kind: 'warning', message: `${msg}; loading anyway because --allow-expired was given` });
  }
  for (const s of opts.subscriptions) {
    if (!catalog.releases.some((e) => subscribed([s], e))) emit({ kind: 'warning', message: `${s.name}${s.tag ? ':' + s.tag : ''} is not in the catalog of ${loc}` });
  }
  const loadedHere = (state.loaded[loc] ??= {});
  const cache = new ObjectCache(store.cacheDir);
  let imageStore: ImageStore | undefined = opts.imageStore;
  let failure: unknown;
  const refuse = (ref: string, entry: CatalogEntry, e: unknown) => {
    const code = (e as { code?: string }).code ?? 'INTERNAL';
    const message = e instanceof Error ? e.message : String(e);
    result.refused.push({ ref, digest: entry.digest, code, message });
    emit({ kind: 'refused', ref, version: entry.version, digest: entry.digest, message, code });
    failure ??= e;
  };

  for (const entry of catalog.releases.filter((e) => subscribed(opts.subscriptions, e))) {
    opts.signal?.throwIfAborted();
    const ref = `${entry.name}:${entry.tag}`;
    const prev = loadedHere[ref];
    if (prev && prev.digest === entry.digest) {
      // still there? a removed image is loaded again
      const present = await docker.inspectImage(ref, opts.signal);
      if (present?.Id === prev.imageId) {
        result.upToDate.push(ref);
        emit({ kind: 'up-to-date', ref, version: entry.version });
        continue;
      }
    } else if (prev && entry.version < prev.version) {
      refuse(ref, entry, new TarportError('ROLLBACK', `${ref}: the catalog offers v${entry.version}, older than v${prev.version} loaded before; refusing`));
      continue;
    }
    if (opts.skip?.get(ref) === entry.digest) continue; // refused before and unchanged since
    try {
      const { record, bytes } = await repo.readRecord(entry, { digest: entry.digest, size: entry.size }, opts.signal);
      const signer = opts.trust?.length
        ? await verifyDetached(bytes, await repo.readSignature(recordKey(entry.name, entry.tag, entry.record), opts.signal), opts.trust, `release ${ref} v${entry.version}`)
        : undefined;
      imageStore ??= await docker.imageStore(opts.signal);
      const { imageId, bytesFetched } = record.kind === 'image'
        ? await loadImage(repo, docker, cache, record, imageStore, (e) => emit(e), opts.decryptKey, opts.signal)
        : await importRootfs(repo, docker, cache, record, opts.decryptKey, opts.signal);
      (result as { bytesFetched: number }).bytesFetched += bytesFetched;
      const previous = prev && prev.imageId !== imageId ? [prev.imageId, ...prev.previous.filter((p) => p !== imageId)] : (prev?.previous ?? []);
      loadedHere[ref] = { version: record.version, record: entry.record, digest: entry.digest, imageId, loadedAt: new Date().toISOString(), previous };
      await store.write(state);
      result.loaded.push({ ref, version: record.version, imageId });
      emit({ kind: 'loaded', ref, version: record.version, imageId, bytesFetched, ...(signer ? { signer } : {}) });
      if (imageStore === 'graphdriver') await cache.prune(new Set());
      if (opts.keepImages !== undefined) await retire(docker, loadedHere[ref]!, ref, opts.keepImages, emit, () => store.write(state));
      if (opts.hook) emit(await runHook(opts.hook, ref, record.version, opts.signal));
    } catch (e) {
      if ((e as { code?: string }).code === 'ABORTED' || opts.signal?.aborted) throw e;
      refuse(ref, entry, e);
    }
  }
  state.catalogSequence[loc] = Math.max(seen, catalog.sequence);
  // a release that failed for a transient reason must be tried again: a cheap poll that saw this
  // stat would take the catalog as handled
  if (result.refused.every((f) => isRefusalCode(f.code))) state.catalogStat[loc] = stat;
  await store.write(state);
  if (failure && opts.throwOnRefused !== false) throw failure;
  return result;
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
      await verifyDetached(got.bytes, await repo.readSignature(CATALOG_KEY, opts.signal), opts.trust, `catalog of ${repo.location}`);
      return got;
    } catch (e) {
      if (attempt >= 1) throw e;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/** Removes the images a tag had before, beyond the newest `keep`; an image in use stays. */
async function retire(docker: DockerApi, loaded: { previous: string[] }, ref: string, keep: number, emit: (e: PullEvent) => void, save: () => Promise<void>): Promise<void> {
  const old = loaded.previous.slice(keep);
  if (old.length === 0) return;
  const kept: string[] = loaded.previous.slice(0, keep);
  for (const id of old) {
    try {
      await docker.removeImage(id);
      emit({ kind: 'removed-image', ref, imageId: id });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (/No such image/i.test(msg)) continue;
      kept.push(id); // in use by a container, or shared: try again next time
      emit({ kind: 'warning', message: `could not remove ${id.slice(0, 19)}, an earlier image of ${ref}: ${msg}` });
    }
  }
  loaded.previous = kept;
  await save();
}

/** Runs the hook with NAME:TAG and the version; its failure is reported, never fatal. */
async function runHook(cmd: string, ref: string, version: number, signal?: AbortSignal): Promise<PullEvent> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve) => {
    let out = '';
    // CMD gets NAME:TAG and the version as arguments, and as TARPORT_REF and TARPORT_VERSION
    const child = spawn('/bin/sh', ['-c', `${cmd} "$@"`, 'tarport-hook', ref, String(version)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TARPORT_REF: ref, TARPORT_VERSION: String(version) },
      ...(signal ? { signal } : {}),
      timeout: 300_000,
    });
    child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-2000)));
    child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-2000)));
    child.on('error', (e) => resolve({ kind: 'hook', ref, version, ok: false, message: `hook ${JSON.stringify(cmd)} could not run: ${e.message}` }));
    child.on('close', (code, sig) =>
      resolve({
        kind: 'hook',
        ref,
        version,
        ok: code === 0,
        message: code === 0 ? `hook ${JSON.stringify(cmd)} done` : `hook ${JSON.stringify(cmd)} failed (${sig ?? `exit ${code}`}): ${out.trim().split('\n').slice(-3).join(' | ')}`,
      }),
    );
  });
}

const layerPath = (diffId: string) => `${hexOf(diffId)}/layer.tar`;

async function loadImage(
  repo: Repository,
  docker: DockerApi,
  cache: ObjectCache,
  record: ReleaseRecord,
  store: ImageStore,
  emit: (e: PullEvent) => void,
  key: DecryptionKey | undefined,
  signal?: AbortSignal,
): Promise<{ imageId: string; bytesFetched: number }> {
  const ref = `${record.name}:${record.tag}`;
  if (!record.config) throw new TarportError('INTEGRITY', `${ref} v${record.version}: image release without a config`);
  // decompression threads take ~45 ms to start: the first starts now (pull() stops the spare)
  if (record.layers.some((l) => l.compression === 'zstd')) prewarmDecompressors();
  const stored = await repo.readSmallBlob(record.config, `config of ${ref}`, signal);
  const config = record.config.encryption ? await collect(await decryptStream(Readable.from([stored]), needKey(key, record), `config of ${ref}`)) : stored;
  if (sha256(config) !== record.contentKey) {
    throw new TarportError('INTEGRITY', `${ref} v${record.version}: the config's digest ${sha256(config)} is not the image ID ${record.contentKey} the record names`);
  }
  const diffIds = record.layers.map((l) => l.diffId);
  const cfgDiffIds = (JSON.parse(config.toString('utf8')) as { rootfs?: { diff_ids?: string[] } }).rootfs?.diff_ids ?? [];
  if (cfgDiffIds.length !== diffIds.length || cfgDiffIds.some((d, i) => d !== diffIds[i])) {
    throw new TarportError('INTEGRITY', `${ref} v${record.version}: the record's layers do not match the image config's diff_ids`);
  }
  // On the graphdriver store a load archive may leave out the layers whose chain the daemon has
  // (moby's partial load); the containerd store needs every layer.
  let skip = 0;
  if (store === 'graphdriver') {
    const have = await docker.layerChainIds(signal);
    const chains = chainIds(diffIds);
    while (skip < chains.length && have.has(chains[skip]!)) skip++;
  }
  emit({ kind: 'loading', ref, version: record.version, layers: record.layers.length, skipped: skip });
  // Everything the load needs is fetched and verified before the daemon sees a byte, except from a
  // local repository on the graphdriver store: there the object is read in place, its digest checked
  // on the way; a mismatch fails the stream before manifest.json, and the daemon loads nothing.
  // (The containerd store keeps every layer in the cache: a later stick may carry only a difference.)
  // encrypted objects always go through the cache: ciphertext is checked before it is decrypted
  const direct = store === 'graphdriver' && repo.transport.capabilities.local && !record.layers.some((l) => l.encryption);
  const files: LoadFile[] = [];
  const included = new Set<string>();
  let bytesFetched = config.length;
  for (const l of record.layers.slice(skip)) {
    if (included.has(l.diffId)) continue;
    included.add(l.diffId);
    if (!direct) bytesFetched += await cache.ensure(repo, l, signal);
    else bytesFetched += l.size;
    files.push({
      name: layerPath(l.diffId),
      size: l.uncompressedSize,
      // The daemon checks each layer's diff_id itself as it applies it (moby's "invalid diffID for
      // layer"; containerd likewise), so we check the uncompressed size only and spare a hash pass.
      open: async () => {
        const raw = direct ? await repo.readBlob(l, { signal }) : cache.open(l.digest);
        const src = l.encryption ? await decryptStream(raw, needKey(key, record), `layer ${l.diffId} of ${ref}`) : raw;
        const dec = await threadedDecompressor(l.compression);
        pipeline(src, dec).catch((e: unknown) => dec.destroy(e as Error));
        return dec;
      },
    });
  }
  // manifest.json is written last: if any layer fails its check, the daemon never sees a manifest
  // and loads nothing.
  const archive = writeLoadArchive({ configDigest: record.contentKey, config, repoTags: [ref], layerPaths: diffIds.map(layerPath), files });
  await docker.load(archive, signal);
  const loaded = await docker.inspectImage(ref, signal);
  if (loaded?.Id !== record.contentKey) {
    throw new TarportError('DAEMON', `${ref}: after the load the daemon has ${loaded?.Id ?? 'no image'} under this tag, expected ${record.contentKey}`);
  }
  return { imageId: loaded.Id, bytesFetched };
}

async function importRootfs(repo: Repository, docker: DockerApi, cache: ObjectCache, record: ReleaseRecord, key: DecryptionKey | undefined, signal?: AbortSignal): Promise<{ imageId: string; bytesFetched: number }> {
  const ref = `${record.name}:${record.tag}`;
  const l = record.layers[0]!;
  if (record.layers.length !== 1) throw new TarportError('INTEGRITY', `${ref} v${record.version}: a rootfs release has exactly one object`);
  const bytesFetched = await cache.ensure(repo, l, signal);
  // docker import would create the image as soon as the tar ends, before a stream error at its very
  // end could stop it: check the uncompressed digest in a pass of its own first.
  const plain = async () => (l.encryption ? await decryptStream(cache.open(l.digest), needKey(key, record), `root file system of ${ref}`) : cache.open(l.digest));
  const d = new Digester();
  await pipeline(await plain(), decompressor(l.compression), d, new Writable({ write: (_c, _e, cb) => cb() }), { signal });
  if (d.digest() !== l.diffId || d.bytes !== l.uncompressedSize) {
    throw new TarportError('DIGEST_MISMATCH', `${ref} v${record.version}: the root file system's digest is ${d.digest()}, the record says ${l.diffId}`);
  }
  const src = await plain();
  const dec = decompressor(l.compression);
  pipeline(src, dec).catch((e: unknown) => dec.destroy(e as Error));
  const imageId = await docker.import(dec, record.name, record.tag, signal);
  return { imageId, bytesFetched };
}

function needKey(key: DecryptionKey | undefined, record: ReleaseRecord): DecryptionKey {
  if (key) return key;
  const to = record.layers.find((l) => l.encryption)?.encryption?.recipients ?? record.config?.encryption?.recipients ?? [];
  throw new TarportError('USAGE', `${record.name}:${record.tag} v${record.version} is encrypted (to ${to.join(', ')}): pass --decrypt-key FILE`);
}

async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export type { State };
