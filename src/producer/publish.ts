import { createReadStream } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { TarArchive, feedFile, readArchiveContent, type ArchiveContent, type ArchiveKind, type ArchiveImage, type Compression, type WatchedLayer } from '../archive/index.js';
import { encryptStream, sha256, type TrustedKey } from '../crypto/index.js';
import { TarportError, isTarportError } from '../errors.js';
import {
  RECORD_SCHEMA,
  RECORD_SCHEMA_INDEX,
  formatRef,
  parseRef,
  type CatalogEntry,
  type ImageRef,
  type LayerDescriptor,
  type ReleaseRecord,
  type RegistryView,
  type ReleaseRef,
  type Repository,
  type Sign,
  type Encryption,
  type WriteTransaction,
  type BeginOptions,
  unsignedOverSignedWarning,
} from '../repo/index.js';
import { VERSION } from '../version.js';
import { indexParts, imageParts, type ImageContext } from './multiplatform.js';
import { UnnamedArchiveError } from './naming.js';
import { LayerUploader, type Uploaded } from './upload.js';

export interface PublishOptions {
  readonly compression: Compression;
  /** Publish under this name:tag instead of the archive's own tags (required for rootfs archives). */
  readonly name?: ImageRef;
  /** How long the catalog stays valid. */
  readonly catalogTtlMs: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: PublishEvent) => void;
  /** Signs each release record and the catalog (detached, armored, beside the file). */
  readonly sign?: Sign;
  /** Encrypts layers and configs to these public keys (OpenPGP, one message per object). */
  readonly encryptTo?: readonly TrustedKey[];
  /** Create the repository when the location holds none (`--init`); otherwise that is refused (NO_REPOSITORY). */
  readonly create?: boolean;
  /** What the archive is (`--kind`); default `auto`: an image when it has an image's metadata files. */
  readonly kind?: ArchiveKind;
  /** How many times its size a compressed archive or layer may expand (`--max-expansion`; 0: no limit; default MAX_RATIO). */
  readonly maxExpansion?: number;
}

export type PublishEvent =
  | { kind: 'layer'; diffId: string; status: 'uploaded' | 'present'; bytes: number }
  | { kind: 'release'; ref: string; status: 'published' | 'unchanged'; version: number }
  /** The publish waits (for a gc's notice to end): said once, so that minutes without a line are no mystery. */
  | { kind: 'waiting'; message: string };

export interface PublishedRelease {
  readonly name: string;
  readonly tag: string;
  readonly version: number;
  readonly status: 'published' | 'unchanged';
  readonly kind: 'image' | 'rootfs';
  readonly record?: string;
  /** Why a registry client cannot pull this release from a web mirror (docs/mirror.md), when that is not by design (encrypted, root file system). */
  readonly notServedAsRegistry?: string;
}

export interface PublishResult {
  readonly archive: string;
  readonly releases: PublishedRelease[];
  /** Bytes of new objects written to the repository. */
  readonly uploadedBytes: number;
  readonly uploadedObjects: number;
  /** What the producer must hear though the publish succeeded (an unsigned catalog over a signed one). */
  readonly warnings?: string[];
}

const DAY = 24 * 3600 * 1000;
export const DEFAULT_CATALOG_TTL_MS = 90 * DAY;

/**
 * An archive still being written to `path` (standard input copied to a file, `push -`), with its
 * layer-shaped entries as they are seen whole (LayerWatch): a producer stores new layers while the
 * rest of the archive comes, instead of after it.
 */
export interface GrowingArchive {
  readonly path: string;
  /** Resolves once the whole archive is in the file; rejects with the copy's fault. */
  readonly complete: Promise<void>;
  /** Ends when the copy does. */
  readonly layers: AsyncIterable<WatchedLayer>;
  /**
   * The copy's fault once it failed, set before the file goes: a layer read that fails because the
   * file went reports this instead.
   */
  fault(): unknown;
}

/**
 * Publishes one archive: every image in it under each of its tags (or `name`), or a rootfs archive
 * under `name`, through one write transaction (repo/transaction.ts: objects, then records, then the
 * catalog). Objects go to temporary names first and are renamed into place only after every layer
 * has been checked against its diff_id, so a bad archive leaves nothing in the repository.
 */
export async function publishArchive(repo: Repository, source: string | GrowingArchive, opts: PublishOptions): Promise<PublishResult> {
  if (typeof source !== 'string') return publishGrowing(repo, source, opts);
  const tar = await TarArchive.open(source, opts.signal, opts.maxExpansion);
  const content = await readArchiveContent(tar, opts.kind);
  const tx = await repo.begin(txOptions(opts));
  try {
    const uploader = new LayerUploader(tx, source, opts.compression, opts.encryptTo, opts.signal, opts.maxExpansion);
    return await publishIn({ tx, repo, tar, content, path: source, opts, uploader, early: new Map() });
  } finally {
    await tx.end();
  }
}

/**
 * A growing archive: the transaction begins once a first layer-shaped entry came whole (so empty
 * or foreign input leaves the location as it found it, `--init` or not), and each new uncompressed
 * layer is stored as soon as it was seen whole, its digest (its diff_id) not among the layers of
 * the repository's current releases. Once the archive is complete it is read as a file is, and
 * every layer is checked against the config's diff_id as before; a stored layer no image names is
 * dropped.
 */
async function publishGrowing(repo: Repository, g: GrowingArchive, opts: PublishOptions): Promise<PublishResult> {
  const coming = g.layers[Symbol.asyncIterator]();
  // a root file system has no layers to store early, whatever files of its own look like one
  const first = opts.kind === 'rootfs' ? { done: true as const, value: undefined } : await coming.next();
  let tx: WriteTransaction | undefined;
  if (!first.done) tx = await repo.begin(txOptions(opts)).catch(() => undefined);
  if (!tx) {
    // nothing to store early, or a repository that refused the write: as for a file, the
    // archive's own faults come before the repository's (whose begin then fails again)
    await g.complete;
    return publishArchive(repo, g.path, opts);
  }
  try {
    const uploader = new LayerUploader(tx, g.path, opts.compression, opts.encryptTo, opts.signal, opts.maxExpansion);
    // a repository that cannot say what it holds now stores nothing early: the archive's faults
    // come first, and publishIn asks again once the archive is whole
    const candidates = await currentLayers(repo, uploader, undefined, opts.signal).catch(() => undefined);
    const layers = prepend(first.value as WatchedLayer, coming);
    const early = candidates ? await uploadWhileComing(uploader, g, layers, new Set(candidates.keys()), opts).catch((e: unknown) => {
      throw g.fault() ?? e; // a layer read cut short by the copy's failure: the copy's fault is the cause
    }) : new Map<string, Uploaded>();
    await g.complete;
    const tar = await TarArchive.open(g.path, opts.signal, opts.maxExpansion);
    const content = await readArchiveContent(tar, opts.kind);
    return await publishIn({ tx, repo, tar, content, path: g.path, opts, uploader, early, ...(candidates ? { candidates } : {}) });
  } finally {
    await tx.end();
  }
}

async function* prepend<T>(first: T, rest: AsyncIterator<T>): AsyncGenerator<T> {
  yield first;
  for (let n = await rest.next(); !n.done; n = await rest.next()) yield n.value;
}

/** The layers of every tag's current release (those of `wanted` only, when given), by diff_id, that the uploader's keys can read. */
async function currentLayers(repo: Repository, uploader: LayerUploader, wanted: ReadonlySet<string> | undefined, signal: AbortSignal | undefined): Promise<Map<string, LayerDescriptor>> {
  const catalog = (await repo.readCatalog(signal))?.catalog;
  return layerCandidates(repo, catalog?.releases ?? [], uploader.encryption, wanted, signal);
}

/**
 * Stores the new uncompressed layers of a growing archive as they come, one at a time; by entry
 * name. Each is a layer stored (the `layer` event) once its upload ended, as a file push says it.
 */
async function uploadWhileComing(uploader: LayerUploader, g: GrowingArchive, layers: AsyncIterable<WatchedLayer>, held: ReadonlySet<string>, opts: PublishOptions): Promise<Map<string, Uploaded>> {
  const out = new Map<string, Uploaded>();
  const seen = new Set<string>(held);
  for await (const l of layers) {
    if (g.fault() !== undefined) break; // the copy failed: what it queued is not worth a read
    // an entry named twice: the first is the one the archive reader indexes (an image archive is
    // then refused; a root file system stores none of these)
    if (l.form !== 'tar' || seen.has(l.digest) || out.has(l.name)) continue;
    seen.add(l.digest);
    const stream = new PassThrough({ highWaterMark: 1 << 20 });
    const feeding = feedFile(g.path, stream, { start: l.offset, length: l.size, lend: true });
    feeding.catch(() => undefined); // its fault reaches the upload through the stream, awaited below
    const u = await uploader.upload({ stream, what: `layer ${l.name}`, hashed: { diffId: l.digest, size: l.size } });
    // the watch hashed what went into the file: the read must give back as many bytes
    const fed = await feeding;
    if (fed !== l.size) throw new TarportError('BAD_INPUT', `${g.path}: layer ${l.name}: ${fed} bytes read back of ${l.size}`);
    out.set(l.name, u);
    emitLayer(opts, u);
  }
  return out;
}

function txOptions(opts: PublishOptions): BeginOptions {
  const onEvent = opts.onEvent;
  return { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.create ? { create: true } : {}), ...(onEvent ? { onWait: (message: string) => onEvent({ kind: 'waiting', message }) } : {}) };
}

/** One publish under way. */
interface Publishing {
  readonly tx: WriteTransaction;
  readonly repo: Repository;
  readonly tar: TarArchive;
  readonly content: ArchiveContent;
  readonly path: string;
  readonly opts: PublishOptions;
  readonly uploader: LayerUploader;
  /** Layers stored while the archive came (growing archives), by entry name; not yet checked. */
  readonly early: ReadonlyMap<string, Uploaded>;
  /** The layers of the current releases, by diff_id, when already read. */
  readonly candidates?: ReadonlyMap<string, LayerDescriptor>;
}

interface Plan {
  readonly ref: ImageRef;
  readonly record: Omit<ReleaseRecord, 'version'>;
}

async function publishIn(p: Publishing): Promise<PublishResult> {
  const { tx, opts } = p;
  try {
    const known = await knownLayers(p);
    const smallBlobs: Buffer[] = [];
    const plans = p.content.kind === 'rootfs' ? await planRootfs(p, known) : await planImages(p, known, smallBlobs);
    // Every layer checked: make objects visible, then the small objects, then records, then the catalog.
    const uploadedObjects = p.uploader.staged.filter((b) => b.uploaded).length;
    const uploadedBytes = p.uploader.uploadedBytes;
    await tx.commitObjects(smallBlobs);
    p.uploader.staged.length = 0;
    const releases = await writeReleases(p, plans);
    // Always, also when nothing was new: a catalog left behind by a crash or a lost race converges here.
    const { unsignedOverSigned } = await tx.publishCatalog({ ttlMs: opts.catalogTtlMs, ...(opts.sign ? { sign: opts.sign } : {}) });
    const warnings = [...(p.content.kind === 'rootfs' ? rootfsWarnings(p) : []), ...(unsignedOverSigned ? [unsignedOverSignedWarning(p.repo.location)] : [])];
    return { archive: p.path, releases: withRegistryNotes(releases, tx.registryView), uploadedBytes, uploadedObjects, ...(warnings.length ? { warnings } : {}) };
  } catch (e) {
    await p.uploader.dropAll();
    throw e;
  }
}

function baseRecord() {
  return { schema: RECORD_SCHEMA as typeof RECORD_SCHEMA | typeof RECORD_SCHEMA_INDEX, created: new Date().toISOString(), kind: 'image' as const, producer: { tool: 'tarport', version: VERSION } };
}

/**
 * What makes a root file system that is published fail on some consumers: a tar that names one path
 * twice, which the import of Docker's classic image store refuses (tar-split, "duplicates of file
 * paths not supported"), where containerd and Podman take the last copy.
 */
function rootfsWarnings(p: Publishing): string[] {
  const dup = p.tar.shape.repeated;
  if (dup === undefined) return [];
  return [`${p.path}: the root file system holds ${JSON.stringify(dup)} more than once: Docker's import (its classic image store) refuses such a tar ("duplicates of file paths not supported"), so those consumers will fail to load it; containerd and Podman take the last copy`];
}

async function planRootfs(p: Publishing, known: ReadonlyMap<string, LayerDescriptor>): Promise<Plan[]> {
  const { opts, path } = p;
  if (!opts.name) {
    throw new UnnamedArchiveError(`${path}: this is a root file system archive (docker export) and carries no image name; give one with --name NAME:TAG`);
  }
  for (const u of p.early.values()) await p.uploader.drop(u); // entries named like layers, in a file system
  const u = await p.uploader.upload({ stream: createReadStream(path, { highWaterMark: 1 << 20 }), ...(p.tar.compression ? { declared: p.tar.compression } : {}), what: 'root file system' });
  let layer = u.layer;
  const reuse = known.get(layer.diffId);
  if (reuse) {
    // The same root file system is stored already: keep that object, drop ours.
    await p.uploader.drop(u);
    layer = reuse;
  } else {
    emitLayer(p.opts, u);
  }
  const base = baseRecord();
  return [{ ref: opts.name, record: { ...base, schema: RECORD_SCHEMA, name: opts.name.name, tag: opts.name.tag, kind: 'rootfs', contentKey: layer.diffId, layers: [layer] } }];
}

async function planImages(p: Publishing, known: ReadonlyMap<string, LayerDescriptor>, smallBlobs: Buffer[]): Promise<Plan[]> {
  const { opts, path, tar } = p;
  const content = p.content as Exclude<ArchiveContent, { kind: 'rootfs' }>;
  const count = content.images.length + content.indexes.length;
  if (opts.name && count > 1) {
    throw new TarportError('BAD_INPUT', `${path}: holds ${count} images; --name applies to one; publish them by their own tags or one archive per image`);
  }
  const targets = content.images.map((im) => ({ im, refs: imageRefs(path, im.repoTags, im.configDigest, opts.name) }));
  const indexTargets = content.indexes.map((ix) => ({ ix, refs: imageRefs(path, ix.repoTags, ix.digest || 'index', opts.name) }));
  checkLayerEntries(path, imagesOf(content));
  const fresh = await storeLayers(p, neededLayers(imagesOf(content), known));
  const encryptTo = opts.encryptTo;
  const encryption = p.uploader.encryption;
  const ctx: ImageContext = {
    path,
    encrypted: encryption !== undefined,
    layer: (diffId) => storedLayer(known, fresh, diffId),
    small: async (bytes, mediaType) => {
      if (!encryption) {
        smallBlobs.push(bytes);
        return { mediaType, digest: sha256(bytes), size: bytes.length };
      }
      const sealed = await collect(await encryptStream(Readable.from([bytes]), encryptTo!));
      smallBlobs.push(sealed);
      return { mediaType: mediaType + '+encrypted', digest: sha256(sealed), size: sealed.length, encryption };
    },
    plain: (bytes) => void smallBlobs.push(bytes),
  };
  const base = baseRecord();
  const plans: Plan[] = [];
  for (const { im, refs } of targets) {
    const { config, manifest, layers } = await imageParts(im, ctx);
    for (const ref of refs) {
      plans.push({ ref, record: { ...base, name: ref.name, tag: ref.tag, contentKey: im.configDigest, config, ...(manifest ? { manifest } : {}), layers, sourceTags: [...im.repoTags] } });
    }
  }
  for (const { ix, refs } of indexTargets) {
    const { contentKey, manifest, layers, index } = await indexParts(tar, ix, ctx);
    for (const ref of refs) {
      plans.push({ ref, record: { ...base, schema: RECORD_SCHEMA_INDEX, name: ref.name, tag: ref.tag, contentKey, ...(manifest ? { manifest } : {}), layers, sourceTags: [...ix.repoTags], index } });
    }
  }
  return plans;
}

interface Needed {
  readonly diffId: string;
  readonly declared?: Compression;
}

/**
 * Refuses an archive entry listed for two different diff_ids (Docker refuses it too): one entry has
 * one digest, so one of them is false, and the layers are stored by entry, each read once.
 */
function checkLayerEntries(path: string, images: readonly ArchiveImage[]): void {
  const byEntry = new Map<string, string>();
  for (const im of images) {
    for (const l of im.layers) {
      const first = byEntry.get(l.entry);
      if (first !== undefined && first !== l.diffId) {
        throw new TarportError('BAD_INPUT', `${path}: the archive entry ${l.entry} is listed for two diff_ids, ${first} and ${l.diffId}: one entry holds one layer`);
      }
      byEntry.set(l.entry, l.diffId);
    }
  }
}

/** The stored layer of a diff_id; checkLayerEntries and storeLayers leave none missing. */
function storedLayer(known: ReadonlyMap<string, LayerDescriptor>, fresh: ReadonlyMap<string, LayerDescriptor>, diffId: string): LayerDescriptor {
  const l = known.get(diffId) ?? fresh.get(diffId);
  if (!l) throw new TarportError('INTERNAL', `internal error: no layer stored for diff_id ${diffId}`);
  return l;
}

/** Layers the repository does not hold yet, by entry, each diff_id once (checkLayerEntries: each entry has one). */
function neededLayers(images: readonly ArchiveImage[], known: ReadonlyMap<string, LayerDescriptor>): Map<string, Needed> {
  const need = new Map<string, Needed>();
  for (const im of images) {
    for (const l of im.layers) {
      if (!known.has(l.diffId) && !need.has(l.entry)) need.set(l.entry, { diffId: l.diffId, ...(l.declaredCompression ? { declared: l.declaredCompression } : {}) });
    }
  }
  return need;
}

/**
 * Stores the needed layers, by diff_id: those stored while the archive came are taken when their
 * digest is the config's diff_id and the archive does not call them compressed; the others are read
 * from the archive now. A layer stored early that no image needs is dropped.
 */
async function storeLayers(p: Publishing, need: ReadonlyMap<string, Needed>): Promise<Map<string, LayerDescriptor>> {
  const fresh = new Map<string, LayerDescriptor>();
  const taken = new Set<Uploaded>();
  for (const [entry, n] of need) {
    const u = p.early.get(entry);
    if (!u || (n.declared && n.declared !== 'none') || fresh.has(n.diffId)) continue;
    if (u.layer.diffId !== n.diffId) throw diffMismatch(p.path, `layer ${entry}`, n.diffId, u.layer.diffId);
    fresh.set(n.diffId, u.layer);
    taken.add(u);
  }
  for (const u of p.early.values()) if (!taken.has(u)) await p.uploader.drop(u);
  const rest = [...need].filter(([, n]) => !fresh.has(n.diffId)).map(([entry]) => entry);
  for await (const { entry, stream } of p.tar.streamEntries(rest, p.opts.signal)) {
    const n = need.get(entry.name)!;
    if (fresh.has(n.diffId)) {
      // a second entry of a layer already stored: read past, unused; a read of it that fails (a disk
      // error) must not end the process for want of a listener, and a failed pass fails the next entry
      stream.on('error', () => undefined).resume();
      continue;
    }
    const u = await p.uploader.upload({ stream, ...(n.declared ? { declared: n.declared } : {}), what: `layer ${entry.name}`, sizeHint: entry.size });
    if (u.layer.diffId !== n.diffId) throw diffMismatch(p.path, `layer ${entry.name}`, n.diffId, u.layer.diffId);
    fresh.set(n.diffId, u.layer);
    emitLayer(p.opts, u);
  }
  return fresh;
}

function diffMismatch(path: string, what: string, expected: string, got: string): TarportError {
  return new TarportError('BAD_INPUT', `${path}: ${what} does not match its diff_id: the config says ${expected}, the layer's digest is ${got}`);
}

function emitLayer(opts: PublishOptions, u: Uploaded): void {
  opts.onEvent?.({ kind: 'layer', diffId: u.layer.diffId, status: 'uploaded', bytes: u.blob.size });
}

/** Writes a record for each plan whose content differs from its tag's current release. */
async function writeReleases(p: Publishing, plans: readonly Plan[]): Promise<PublishedRelease[]> {
  const { repo, tx, opts } = p;
  const emit = opts.onEvent ?? (() => undefined);
  const releases: PublishedRelease[] = [];
  for (const { ref, record } of plans) {
    const last = (await repo.listReleases(ref.name, ref.tag, opts.signal)).at(-1);
    if (last) {
      const { record: prev, bytes: prevBytes } = await repo.readRecord(last, undefined, opts.signal ? { signal: opts.signal } : {});
      // the same content under other protection (now signed, by another key, to other recipients)
      // is a new release: "unchanged" would keep the old record, unsigned, unverifiable to consumers
      // that trust only the new key, or unreadable to a new site, for good
      const same = prev.contentKey === record.contentKey && prev.kind === record.kind && recipientsOf(prev) === recipientsOf(record);
      if (same && (!opts.sign || (await signedByNow(repo, last, prevBytes, opts.sign, opts.signal)))) {
        releases.push({ name: ref.name, tag: ref.tag, version: prev.version, status: 'unchanged', kind: record.kind, record: last.record });
        emit({ kind: 'release', ref: formatRef(ref), status: 'unchanged', version: prev.version });
        continue;
      }
    }
    const full: ReleaseRecord = { ...record, version: (last?.version ?? 0) + 1 };
    const w = await tx.writeRecord(full, opts.sign);
    releases.push({ name: ref.name, tag: ref.tag, version: full.version, status: 'published', kind: full.kind, record: w.file });
    emit({ kind: 'release', ref: formatRef(ref), status: 'published', version: full.version });
  }
  return releases;
}

/**
 * Whether the release `ref` (its record `bytes`) holds a signature the key that signs now made: one
 * small read, its signature, checked with the key's public half. A signature too large to be one,
 * one that does not parse, names another key, or does not hold over the record is not (the release
 * is written again, signed). Other read faults are the publish's.
 */
async function signedByNow(repo: Repository, ref: ReleaseRef, bytes: Buffer, sign: Sign, signal: AbortSignal | undefined): Promise<boolean> {
  const sig = await repo.readRecordSignature(ref, signal).catch((e: unknown) => {
    if (isTarportError(e, 'INTEGRITY')) return undefined;
    throw e;
  });
  return sig !== undefined && (await sign.verifies(bytes, sig));
}

/** Who can decrypt a release: its recipients, sorted ('' for a plain one). */
function recipientsOf(r: Omit<ReleaseRecord, 'version'>): string {
  const all = [r.config, ...r.layers, ...(r.index?.platforms ?? []).flatMap((p) => [p.config, ...p.layers])].flatMap((d) => d?.encryption?.recipients ?? []);
  return [...new Set(all)].sort().join(',');
}

/** The name:tag list an image is published under. */
function imageRefs(path: string, repoTags: readonly string[], id: string, name: ImageRef | undefined): ImageRef[] {
  if (name) return [name];
  if (repoTags.length === 0) {
    throw new UnnamedArchiveError(`${path}: the image ${id.slice(0, 19)} carries no NAME:TAG (no tag in a docker save archive; in an OCI layout, an org.opencontainers.image.ref.name that is a tag alone, as skopeo's oci:DIR:TAG writes, names no image); give one with --name NAME:TAG`);
  }
  return repoTags.map((t) => {
    try {
      return parseRef(t, { defaultTag: 'latest' });
    } catch (e) {
      throw new TarportError('BAD_INPUT', `${path}: the archive's tag ${JSON.stringify(t)}: ${(e as Error).message}; publish it under another with --name NAME:TAG`);
    }
  });
}

/**
 * Layers the repository holds already, by diff_id, taken from the current release of every tag:
 * a new version usually shares most layers with the one before it.
 */
async function knownLayers(p: Publishing): Promise<Map<string, LayerDescriptor>> {
  const { tx, repo, opts, content } = p;
  // only the layers this archive holds are worth a look (a root file system's diff_id is known once read)
  const wanted = content.kind === 'rootfs' ? undefined : new Set(imagesOf(content).flatMap((im) => im.layers.map((l) => l.diffId)));
  const candidates = p.candidates ?? (await currentLayers(repo, p.uploader, wanted, opts.signal));
  const mine = [...candidates].filter(([diffId]) => !wanted || wanted.has(diffId));
  // named in our intent before we look: gc spares them from now on (docs/repo-format.md)
  const missing = await tx.protect(mine.map(([, l]) => l.digest));
  const out = new Map<string, LayerDescriptor>();
  for (const [diffId, l] of mine) {
    if (missing.has(l.digest)) continue;
    const have = await repo.blobInfo(l.digest, opts.signal);
    if (have && have.size === l.size) out.set(diffId, l);
  }
  return out;
}

/** The layers the current releases name (those of `wanted` only, when given) that the same keys can read, by diff_id. */
async function layerCandidates(
  repo: Repository,
  current: readonly CatalogEntry[],
  encryption: Encryption | undefined,
  wanted: ReadonlySet<string> | undefined,
  signal?: AbortSignal,
): Promise<Map<string, LayerDescriptor>> {
  // an object can be reused only when the same keys can read it: the same recipients, or plaintext
  const sameKeys = (e: Encryption | undefined) => (e?.recipients.join(',') ?? '') === (encryption?.recipients.join(',') ?? '');
  const candidates = new Map<string, LayerDescriptor>();
  for (const e of current) {
    let record: ReleaseRecord;
    try {
      ({ record } = await repo.readRecord(e, { digest: e.digest, size: e.size }, signal ? { signal } : {}));
    } catch {
      continue; // a broken record only costs us deduplication; `tarport check` reports it
    }
    for (const l of record.layers) if ((!wanted || wanted.has(l.diffId)) && !candidates.has(l.diffId) && sameKeys(l.encryption)) candidates.set(l.diffId, l);
  }
  return candidates;
}

/** Every runnable image of an archive: its images and the platform images of its indexes. */
function imagesOf(content: ArchiveContent): ArchiveImage[] {
  if (content.kind === 'rootfs') return [];
  return [...content.images, ...content.indexes.flatMap((ix) => ix.members.flatMap((m) => (m.kind === 'image' ? [m.image] : [])))];
}

async function collect(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Notes on the releases the registry view left out for a reason the producer may not expect (a clash of paths, say). */
function withRegistryNotes(releases: PublishedRelease[], view: RegistryView | undefined): PublishedRelease[] {
  return releases.map((r) => {
    const s = view?.skipped.find((x) => x.ref === `${r.name}:${r.tag}` && x.reason !== 'no-manifest');
    return s ? { ...r, notServedAsRegistry: s.why } : r;
  });
}
