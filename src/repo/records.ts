import * as z from 'zod';
import { DIGEST_RE } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import { RECORD_FILE_RE } from './layout.js';
import { NAME_RE, TAG_RE } from './names.js';

export const MEDIA_TYPES = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: {
    none: 'application/vnd.oci.image.layer.v1.tar',
    gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
    zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  },
} as const;

const digest = z.string().regex(DIGEST_RE, 'expected sha256:<64 hex digits>');
/**
 * Names and tags read from a repository are printed and used as file names: anything outside
 * Docker's reference grammar (control characters, terminal escapes, slashes in tags) is refused.
 */
const imageName = z.string().max(255).regex(NAME_RE, 'not an image name (Docker reference grammar)');
const imageTag = z.string().regex(TAG_RE, 'not a tag (Docker reference grammar)');
const size = z.number().int().nonnegative();

/** How an object is encrypted: an OpenPGP message to these recipients (key fingerprints). */
export const EncryptionSchema = z.strictObject({ scheme: z.literal('openpgp'), recipients: z.array(z.string()).min(1) });
export type Encryption = z.infer<typeof EncryptionSchema>;

export const DescriptorSchema = z.strictObject({ mediaType: z.string(), digest, size, encryption: EncryptionSchema.optional() });
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const LayerSchema = z.strictObject({
  mediaType: z.string(),
  digest,
  size,
  /** Digest of the uncompressed tar (the image config's diff_id). */
  diffId: digest,
  uncompressedSize: size,
  compression: z.enum(['none', 'gzip', 'zstd']),
  /** When set, the object is the OpenPGP-encrypted compressed layer; digest and size are the ciphertext's. */
  encryption: EncryptionSchema.optional(),
});
export type LayerDescriptor = z.infer<typeof LayerSchema>;

export const RECORD_SCHEMA = 'tarport.release/v1';
/** A release of a multi-platform image (it has `index`): format version 3. */
export const RECORD_SCHEMA_INDEX = 'tarport.release/v2';

/** Printed by ls and the page: short names only (no control characters, no terminal escapes). */
const platformPart = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'not a platform name');
const printable = z.string().max(1024).regex(/^[^\x00-\x1f\x7f]*$/, 'holds control characters');
/**
 * A time as tarport writes it (toISOString), printed by ls, log and the page: a date and time, so
 * that nothing else (a terminal escape, a right-to-left override) reaches a terminal in its column.
 */
const timestamp = z
  .string()
  .max(64)
  // toISOString writes a year past 9999 with six digits and a sign (a --catalog-ttl of centuries)
  .regex(/^(\d{4}|[+-]\d{6})-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$/, 'is no date and time (as 2026-01-31T12:00:00.000Z)')
  .refine((t) => !Number.isNaN(Date.parse(t)), 'is no date and time (as 2026-01-31T12:00:00.000Z)');
export const PlatformSchema = z.strictObject({ os: platformPart, architecture: platformPart, variant: platformPart.optional() });
export type RecordPlatform = z.infer<typeof PlatformSchema>;

/** One runnable platform of a multi-platform release: what a single-platform record holds at its top. */
export const PlatformImageSchema = z.strictObject({
  platform: PlatformSchema,
  /** The image ID (config digest) of this platform. */
  contentKey: digest,
  config: DescriptorSchema,
  /** Absent when the release is encrypted (as for single-platform releases). */
  manifest: DescriptorSchema.optional(),
  layers: z.array(LayerSchema),
});
export type PlatformImage = z.infer<typeof PlatformImageSchema>;

/** A member that is not a runnable image (an attestation, an artifact): kept, carried, never loaded. */
export const ArtifactSchema = z.strictObject({
  /** The artifact's manifest as the archive held it (encrypted: its ciphertext). */
  manifest: DescriptorSchema,
  platform: PlatformSchema.optional(),
  annotations: z.record(z.string().max(256), printable).optional(),
  artifactType: printable.optional(),
  /** Its config and layers, stored as they were (encrypted when the release is). */
  objects: z.array(DescriptorSchema),
});
export type Artifact = z.infer<typeof ArtifactSchema>;

/** A member the source archive listed without its blobs (not an error: recorded, never loaded). */
export const AbsentSchema = z.strictObject({
  mediaType: printable,
  digest,
  size,
  platform: PlatformSchema.optional(),
  annotations: z.record(z.string().max(256), printable).optional(),
  /** What was missing, for people. */
  missing: printable,
});
export type AbsentMember = z.infer<typeof AbsentSchema>;

/**
 * A release made from an OCI image index (format version 3). The record's top `manifest` is then the
 * index tarport wrote (unencrypted releases), its `layers` every platform's layers, and `config` absent.
 */
export const IndexContentSchema = z.strictObject({
  platforms: z.array(PlatformImageSchema).min(1),
  artifacts: z.array(ArtifactSchema),
  absent: z.array(AbsentSchema),
});
export type IndexContent = z.infer<typeof IndexContentSchema>;

export const ReleaseRecordSchema = z.strictObject({
  schema: z.enum([RECORD_SCHEMA, RECORD_SCHEMA_INDEX]),
  name: imageName,
  tag: imageTag,
  version: z.number().int().positive(),
  created: timestamp,
  /** image: loaded with `docker load`; rootfs: a `docker export` tar, loaded with `docker import`. */
  kind: z.enum(['image', 'rootfs']),
  /** What makes two releases the same: the image ID (config digest), or the rootfs tar's digest. */
  contentKey: digest,
  config: DescriptorSchema.optional(),
  manifest: DescriptorSchema.optional(),
  layers: z.array(LayerSchema).min(1),
  /** The tags the source archive carried (informational). */
  sourceTags: z.array(z.string()).optional(),
  /** Set when the archive held an image index: every platform, artifact and absent member. */
  index: IndexContentSchema.optional(),
  producer: z.strictObject({ tool: z.string(), version: z.string() }),
}).refine((r) => (r.schema === RECORD_SCHEMA_INDEX) === (r.index !== undefined), { message: `a ${RECORD_SCHEMA_INDEX} record, and only one, has an index`, path: ['index'] });
export type ReleaseRecord = z.infer<typeof ReleaseRecordSchema>;

/** tarport 0.1 wrote v1 (no repository id); v2 names the repository, covered by the signature. */
export const CATALOG_SCHEMA_V1 = 'tarport.catalog/v1';
export const CATALOG_SCHEMA = 'tarport.catalog/v2';

export const CatalogEntrySchema = z.strictObject({
  name: imageName,
  tag: imageTag,
  version: z.number().int().positive(),
  kind: z.enum(['image', 'rootfs']),
  created: timestamp,
  /** The record's file name in releases/<name>/<tag>/ (a name of that form: never a path). */
  record: z.string().regex(RECORD_FILE_RE),
  /** Digest and size of the record file: pins it against mix-and-match. */
  digest,
  size,
  /** The OCI manifest (image releases), for index.json. */
  manifest: DescriptorSchema.optional(),
});
export type CatalogEntry = z.infer<typeof CatalogEntrySchema>;

export const CatalogSchema = z.strictObject({
  schema: z.enum([CATALOG_SCHEMA_V1, CATALOG_SCHEMA]),
  /** The repository's id (tarport/format.json); absent in v1 catalogs. */
  repository: z.string().regex(/^[0-9a-f]{32}$/).optional(),
  /** Grows by one with every write; a consumer never goes back to a lower one. */
  sequence: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  created: timestamp,
  expires: timestamp,
  releases: z.array(CatalogEntrySchema),
});
export type Catalog = z.infer<typeof CatalogSchema>;

/** Records and catalogs are indented JSON, so a person can read and diff them. */
export function serialize(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value, null, 2) + '\n', 'utf8');
}

export function parseWith<T>(schema: z.ZodType<T>, bytes: Buffer, what: string): T {
  refuseContainerBomb(bytes, what);
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new TarportError('INTEGRITY', `${what} is not valid JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
    throw new TarportError('INTEGRITY', `${what} is not a valid ${what.split(' ')[0]} (${issues})`);
  }
  return r.data;
}

/**
 * JSON of a few bytes per array or object (`[[],[],…]`) costs tens of bytes of heap each once
 * parsed: a 64 MiB catalog of them, from a server that lies before any signature is checked, would
 * take a gigabyte. What tarport writes has far fewer: at most one per 8 bytes, and a million in all.
 */
function refuseContainerBomb(bytes: Buffer, what: string): void {
  const limit = Math.min(MAX_JSON_CONTAINERS, Math.floor(bytes.length / 8) + 1000);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if ((b === 0x5b || b === 0x7b) && ++n > limit) {
      throw new TarportError('INTEGRITY', `${what} holds more than ${limit} arrays and objects in ${bytes.length} bytes: not one tarport writes (refused before parsing it)`);
    }
  }
}

const MAX_JSON_CONTAINERS = 1_000_000;

/** Total order of releases of one tag: version, then record file name. */
export function compareReleases(a: { version: number; record: string }, b: { version: number; record: string }): number {
  return a.version - b.version || (a.record < b.record ? -1 : a.record > b.record ? 1 : 0);
}
