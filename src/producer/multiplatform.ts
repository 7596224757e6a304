import type { TarArchive } from '../archive/index.js';
import { REFERENCE_DIGEST, type ArchiveImage, type ArchiveIndex, type IndexMember } from '../archive/index.js';
import { sha256 } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import {
  MEDIA_TYPES,
  serialize,
  type AbsentMember,
  type Artifact,
  type Descriptor,
  type IndexContent,
  type LayerDescriptor,
  type PlatformImage,
} from '../repo/index.js';

/** What publishing an image needs from the publish under way. */
export interface ImageContext {
  readonly path: string;
  /** True when the release is encrypted: configs and artifacts are sealed, no OCI manifest is written. */
  readonly encrypted: boolean;
  /** The stored layer of a diff_id (uploaded now or held already). */
  layer(diffId: string): LayerDescriptor;
  /** Stores a small object (a config, a manifest, an artifact blob): sealed when the release is encrypted. */
  small(bytes: Buffer, mediaType: string): Promise<Descriptor>;
  /** Stores an OCI manifest or index as it is (never sealed: it only names objects). */
  plain(bytes: Buffer): void;
}

/** The config and (unencrypted) the OCI manifest of one image, its layers as stored. */
export async function imageParts(im: ArchiveImage, ctx: ImageContext): Promise<{ config: Descriptor; manifest?: Descriptor; layers: LayerDescriptor[] }> {
  const layers = im.layers.map((l) => ctx.layer(l.diffId));
  const config = await ctx.small(im.config, MEDIA_TYPES.config);
  // the config's values are secret too; an encrypted release has no OCI manifest (skopeo could not
  // decrypt its layers anyway)
  if (ctx.encrypted) return { config, layers };
  const bytes = serialize({ schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config, layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })) });
  ctx.plain(bytes);
  return { config, manifest: { mediaType: MEDIA_TYPES.manifest, digest: sha256(bytes), size: bytes.length }, layers };
}

export interface IndexParts {
  /** Same content, same key: the platforms' image IDs and the artifacts' and absent members' digests. */
  readonly contentKey: string;
  /** The image index tarport wrote (unencrypted releases): the release's top manifest. */
  readonly manifest?: Descriptor;
  /** Every platform's layers, each object once. */
  readonly layers: LayerDescriptor[];
  readonly index: IndexContent;
}

/**
 * A multi-platform image as one release: each runnable platform stored as a single image would be,
 * artifacts (attestations) kept byte for byte, members without blobs recorded as absent; then the
 * index over them, whose attestations point at the manifests tarport wrote.
 */
export async function indexParts(tar: TarArchive, ix: ArchiveIndex, ctx: ImageContext): Promise<IndexParts> {
  const images = ix.members.filter((m) => m.kind === 'image');
  if (images.length === 0) {
    const absent = ix.members.filter((m) => m.kind === 'absent').map((m) => `${m.descriptor.platform ? platformName(m.descriptor.platform) : m.descriptor.digest} (${m.missing} missing)`);
    throw new TarportError('BAD_INPUT', `${ctx.path}: its image index holds no image whose blobs the archive carries${absent.length ? `: ${absent.join(', ')}` : ''}; save it again with the platforms you need`);
  }
  const platforms: PlatformImage[] = [];
  const renamed = new Map<string, string>(); // the archive's manifest digest -> the one tarport wrote
  for (const m of images) {
    const parts = await imageParts(m.image, ctx);
    if (parts.manifest) renamed.set(m.descriptor.digest, parts.manifest.digest);
    platforms.push({ platform: m.platform, contentKey: m.image.configDigest, ...parts });
  }
  const artifacts: Artifact[] = [];
  for (const m of ix.members) if (m.kind === 'artifact') artifacts.push(await artifactOf(tar, m, ctx, renamed));
  const absent = ix.members.filter((m) => m.kind === 'absent').map(absentOf);
  const index: IndexContent = { platforms, artifacts, absent };
  const layers = [...new Map(platforms.flatMap((p) => p.layers).map((l) => [l.digest, l])).values()];
  const manifest = ctx.encrypted ? undefined : writeIndex(index, ctx);
  return { contentKey: contentKeyOf(images, ix.members), layers, index, ...(manifest ? { manifest } : {}) };
}

function platformName(p: { os: string; architecture: string; variant?: string }): string {
  return [p.os, p.architecture, ...(p.variant ? [p.variant] : [])].join('/');
}

async function artifactOf(tar: TarArchive, m: Extract<IndexMember, { kind: 'artifact' }>, ctx: ImageContext, renamed: ReadonlyMap<string, string>): Promise<Artifact> {
  const objects: Descriptor[] = [];
  for (const b of m.blobs) {
    const bytes = await tar.readEntry(b.entry);
    if (sha256(bytes) !== b.digest) throw new TarportError('BAD_INPUT', `${ctx.path}: ${b.entry} does not match its digest ${b.digest}`);
    objects.push(await ctx.small(bytes, b.mediaType));
  }
  const manifest = ctx.encrypted ? await ctx.small(m.manifest, m.descriptor.mediaType) : (ctx.plain(m.manifest), { mediaType: m.descriptor.mediaType, digest: m.descriptor.digest, size: m.descriptor.size });
  const d = m.descriptor;
  const ref = d.annotations?.[REFERENCE_DIGEST];
  const annotations = d.annotations ? { ...d.annotations, ...(ref && renamed.has(ref) ? { [REFERENCE_DIGEST]: renamed.get(ref)! } : {}) } : undefined;
  return { manifest, objects, ...(d.platform ? { platform: d.platform } : {}), ...(annotations ? { annotations } : {}), ...(d.artifactType ? { artifactType: d.artifactType } : {}) };
}

function absentOf(m: IndexMember): AbsentMember {
  const d = m.descriptor;
  return { mediaType: d.mediaType, digest: d.digest, size: d.size, missing: m.kind === 'absent' ? m.missing : '', ...(d.platform ? { platform: d.platform } : {}), ...(d.annotations ? { annotations: d.annotations } : {}) };
}

/** The OCI image index of the release: skopeo, crane and oras read every platform from it. */
function writeIndex(ix: IndexContent, ctx: ImageContext): Descriptor {
  const manifests = [
    ...ix.platforms.map((p) => ({ ...p.manifest!, platform: p.platform })),
    ...ix.artifacts.map((a) => ({ ...a.manifest, ...(a.platform ? { platform: a.platform } : {}), ...(a.annotations ? { annotations: a.annotations } : {}), ...(a.artifactType ? { artifactType: a.artifactType } : {}) })),
  ];
  const bytes = serialize({ schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests });
  ctx.plain(bytes);
  return { mediaType: MEDIA_TYPES.index, digest: sha256(bytes), size: bytes.length };
}

/** Independent of compression and encryption: publishing the same archive again makes no new version. */
function contentKeyOf(images: readonly Extract<IndexMember, { kind: 'image' }>[], members: readonly IndexMember[]): string {
  const key = {
    platforms: images.map((m) => `${platformName(m.platform)}=${m.image.configDigest}`).sort(),
    others: members.filter((m) => m.kind !== 'image').map((m) => `${m.kind}=${m.descriptor.digest}`).sort(),
  };
  return sha256(Buffer.from(JSON.stringify(key)));
}
