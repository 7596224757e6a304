import { createReadStream } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  TarArchive,
  bombGuard,
  compressor,
  decompressor,
  readArchiveContent,
  sniffStream,
  type ArchiveContent,
  type ArchiveImage,
  type Compression,
} from '../archive/index.js';
import { Digester, encryptStream, sha256, type TrustedKey } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import {
  MEDIA_TYPES,
  RECORD_SCHEMA,
  RECORD_SCHEMA_INDEX,
  formatRef,
  parseRef,
  type CatalogEntry,
  type Descriptor,
  type ImageRef,
  type LayerDescriptor,
  type ReleaseRecord,
  type RegistryView,
  type Repository,
  type StagedBlob,
  type Sign,
  type Encryption,
  type WriteTransaction,
} from '../repo/index.js';
import { VERSION } from '../version.js';
import { indexParts, imageParts, type ImageContext } from './multiplatform.js';
import { UnnamedArchiveError } from './naming.js';

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
}

export type PublishEvent =
  | { kind: 'layer'; diffId: string; status: 'uploaded' | 'present'; bytes: number }
  | { kind: 'release'; ref: string; status: 'published' | 'unchanged'; version: number };

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
}

const DAY = 24 * 3600 * 1000;
export const DEFAULT_CATALOG_TTL_MS = 90 * DAY;

/**
 * Publishes one archive: every image in it under each of its tags (or `name`), or a rootfs archive
 * under `name`, through one write transaction (repo/transaction.ts: objects, then records, then the
 * catalog). Objects go to temporary names first and are renamed into place only after every layer
 * has been checked against its diff_id, so a bad archive leaves nothing in the repository.
 */
export async function publishArchive(repo: Repository, path: string, opts: PublishOptions): Promise<PublishResult> {
  const tar = await TarArchive.open(path, opts.signal);
  const content = await readArchiveContent(tar);
  const tx = await repo.begin({ ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.create ? { create: true } : {}) });
  try {
    return await publishIn(tx, repo, tar, content, path, opts);
  } finally {
    await tx.end();
  }
}

async function publishIn(tx: WriteTransaction, repo: Repository, tar: TarArchive, content: Awaited<ReturnType<typeof readArchiveContent>>, path: string, opts: PublishOptions): Promise<PublishResult> {
  const staged: StagedBlob[] = [];
  let uploadedBytes = 0;
  const emit = opts.onEvent ?? (() => undefined);
  const encryption: Encryption | undefined = opts.encryptTo?.length ? { scheme: 'openpgp', recipients: opts.encryptTo.map((k) => k.fingerprint).sort() } : undefined;

  /** Streams one layer: (decompress) → diff_id → compress → temporary object. */
  const uploadLayer = async (stream: Readable, declared: Compression | undefined, what: string, expectDiffId?: string, sizeHint?: number): Promise<LayerDescriptor> => {
    const inComp = declared ?? (await sniffStream(stream));
    const diff = new Digester();
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    const guard = bombGuard(); // a compressed layer that expands without end is refused, not read for hours
    const feeding = pipeline(stream, guard.input, decompressor(inComp), guard.output, diff, compressor(opts.compression, inComp === 'none' ? sizeHint : undefined), out, { signal: opts.signal });
    let blob: StagedBlob;
    try {
      const stored = encryption ? await encryptStream(out, opts.encryptTo!) : out;
      const [b, f] = await Promise.allSettled([tx.stageBlob(stored), feeding]);
      // the upload runs while the layer is read (stageBlob): when it fails, the read it cut short
      // fails too, but the upload's own error (a TarportError) is the cause; otherwise the read's
      if (b.status === 'rejected' && b.reason instanceof TarportError) throw b.reason;
      if (f.status === 'rejected') throw f.reason;
      if (b.status === 'rejected') throw b.reason;
      blob = b.value;
    } catch (e) {
      out.destroy();
      stream.destroy();
      if (e instanceof TarportError) throw e;
      throw new TarportError('BAD_INPUT', `${path}: ${what}: ${(e as Error).message}`, { cause: e });
    }
    staged.push(blob);
    if (blob.uploaded) uploadedBytes += blob.size;
    const diffId = diff.digest();
    if (expectDiffId && diffId !== expectDiffId) {
      throw new TarportError('BAD_INPUT', `${path}: ${what} does not match its diff_id: the config says ${expectDiffId}, the layer's digest is ${diffId}`);
    }
    emit({ kind: 'layer', diffId, status: 'uploaded', bytes: blob.size });
    return {
      mediaType: MEDIA_TYPES.layer[opts.compression] + (encryption ? '+encrypted' : ''),
      digest: blob.digest,
      size: blob.size,
      diffId,
      uncompressedSize: diff.bytes,
      compression: opts.compression,
      ...(encryption ? { encryption } : {}),
    };
  };

  try {
    const catalog = (await repo.readCatalog(opts.signal))?.catalog;
    // only the layers this archive holds are worth a look (a root file system's diff_id is known once read)
    const wanted = content.kind === 'rootfs' ? undefined : new Set(imagesOf(content).flatMap((im) => im.layers.map((l) => l.diffId)));
    const known = await knownLayers(tx, repo, catalog?.releases ?? [], encryption, wanted, opts.signal);
    const now = new Date().toISOString();
    const producer = { tool: 'tarport', version: VERSION };
    const plans: { ref: ImageRef; record: Omit<ReleaseRecord, 'version'> }[] = [];
    const smallBlobs: Buffer[] = [];

    if (content.kind === 'rootfs') {
      if (!opts.name) {
        throw new UnnamedArchiveError(`${path}: this is a root file system archive (docker export) and carries no image name; give one with --name NAME:TAG`);
      }
      let layer = await uploadLayer(createReadStream(path, { highWaterMark: 1 << 20 }), tar.compression, 'root file system');
      const reuse = known.get(layer.diffId);
      if (reuse) {
        // The same root file system is stored already: keep that object, drop ours.
        const dropped = staged.pop()!;
        await tx.discard(dropped);
        if (dropped.uploaded) uploadedBytes -= layer.size;
        layer = reuse;
      }
      plans.push({ ref: opts.name, record: { schema: RECORD_SCHEMA, name: opts.name.name, tag: opts.name.tag, created: now, kind: 'rootfs', contentKey: layer.diffId, layers: [layer], producer } });
    } else {
      const count = content.images.length + content.indexes.length;
      if (opts.name && count > 1) {
        throw new TarportError('BAD_INPUT', `${path}: holds ${count} images; --name applies to one; publish them by their own tags or one archive per image`);
      }
      const targets = content.images.map((im) => ({ im, refs: imageRefs(path, im.repoTags, im.configDigest, opts.name) }));
      const indexTargets = content.indexes.map((ix) => ({ ix, refs: imageRefs(path, ix.repoTags, ix.digest || 'index', opts.name) }));
      const allImages = imagesOf(content);
      // Layers: what the repository does not hold yet, each diff_id once.
      const need = new Map<string, { declared?: Compression; diffId: string }>();
      for (const im of allImages) {
        for (const l of im.layers) {
          if (!known.has(l.diffId) && !need.has(l.entry)) need.set(l.entry, { diffId: l.diffId, ...(l.declaredCompression ? { declared: l.declaredCompression } : {}) });
        }
      }
      const fresh = new Map<string, LayerDescriptor>();
      for await (const { entry, stream } of tar.streamEntries(need.keys(), opts.signal)) {
        const n = need.get(entry.name)!;
        if (fresh.has(n.diffId)) {
          stream.resume();
          continue;
        }
        fresh.set(n.diffId, await uploadLayer(stream, n.declared, `layer ${entry.name}`, n.diffId, entry.size));
      }
      const ctx: ImageContext = {
        path,
        encrypted: encryption !== undefined,
        layer: (diffId) => known.get(diffId) ?? fresh.get(diffId)!,
        small: async (bytes, mediaType) => {
          if (!encryption) {
            smallBlobs.push(bytes);
            return { mediaType, digest: sha256(bytes), size: bytes.length };
          }
          const sealed = await collect(await encryptStream(Readable.from([bytes]), opts.encryptTo!));
          smallBlobs.push(sealed);
          return { mediaType: mediaType + '+encrypted', digest: sha256(sealed), size: sealed.length, encryption };
        },
        plain: (bytes) => void smallBlobs.push(bytes),
      };
      const base = { schema: RECORD_SCHEMA as typeof RECORD_SCHEMA | typeof RECORD_SCHEMA_INDEX, created: now, kind: 'image' as const, producer };
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
    }

    // Every layer checked: make objects visible, then the small objects, then records, then the catalog.
    const uploadedObjects = staged.filter((b) => b.uploaded).length;
    await tx.commitObjects(smallBlobs);
    staged.length = 0;

    const releases: PublishedRelease[] = [];
    for (const { ref, record } of plans) {
      const last = (await repo.listReleases(ref.name, ref.tag, opts.signal)).at(-1);
      if (last) {
        const { record: prev } = await repo.readRecord(last, undefined, opts.signal ? { signal: opts.signal } : {});
        if (prev.contentKey === record.contentKey && prev.kind === record.kind) {
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
    // Always, also when nothing was new: a catalog left behind by a crash or a lost race converges here.
    await tx.publishCatalog({ ttlMs: opts.catalogTtlMs, ...(opts.sign ? { sign: opts.sign } : {}) });
    return { archive: path, releases: withRegistryNotes(releases, tx.registryView), uploadedBytes, uploadedObjects };
  } catch (e) {
    for (const b of staged) await tx.discard(b);
    throw e;
  }
}

/** The name:tag list an image is published under. */
function imageRefs(path: string, repoTags: readonly string[], id: string, name: ImageRef | undefined): ImageRef[] {
  if (name) return [name];
  if (repoTags.length === 0) {
    throw new UnnamedArchiveError(`${path}: the image ${id.slice(0, 19)} carries no tag; give one with --name NAME:TAG (or save it with 'docker save NAME:TAG')`);
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
async function knownLayers(
  tx: WriteTransaction,
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
  // named in our intent before we look: gc spares them from now on (docs/repo-format.md)
  const missing = await tx.protect([...candidates.values()].map((l) => l.digest));
  const out = new Map<string, LayerDescriptor>();
  for (const [diffId, l] of candidates) {
    if (missing.has(l.digest)) continue;
    const have = await repo.blobInfo(l.digest, signal);
    if (have && have.size === l.size) out.set(diffId, l);
  }
  return out;
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
