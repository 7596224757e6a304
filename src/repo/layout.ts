import { randomBytes } from 'node:crypto';
import { hexOf } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import { encodeSegment } from './names.js';

// Every key the repository format uses, in one place (docs/repo-format.md describes them).

export const OCI_LAYOUT_KEY = 'oci-layout';
export const INDEX_KEY = 'index.json';
export const BLOBS_FOLDER = 'blobs/sha256';
export const TARPORT_FOLDER = 'tarport';
export const RELEASES_FOLDER = 'tarport/releases';
/** The largest catalog a reader takes (a bound on what a hostile repository can make it hold). */
export const MAX_CATALOG_BYTES = 64 << 20;
export const CATALOG_KEY = 'tarport/catalog.json';
export const FORMAT_KEY = 'tarport/format.json';
/** Every catalog ever written, named by sequence and digest, with its signature beside it. */
export const CATALOGS_FOLDER = 'tarport/catalogs';
/** Publish intents and gc announcements (docs/repo-format.md, "Garbage collection"). */
export const PENDING_FOLDER = 'tarport/pending';
/** Acknowledgements: what each consumer host loaded (repo/acks.ts). */
export const ACKS_FOLDER = 'tarport/acks';
/** The page people read (repo/page.ts), derived from the catalog like index.json. */
export const PAGE_KEY = 'index.html';
/** What the page says of each release, kept so that a rewrite reads only new records (repo/page-data.ts). */
export const PAGE_DATA_KEY = 'tarport/page-data.json';
/** The detached signature of a tarport 0.1 catalog (format version 1). */
export const LEGACY_CATALOG_SIGNATURE_KEY = 'tarport/catalog.json.asc';

export function blobKey(digest: string): string {
  return `${BLOBS_FOLDER}/${hexOf(digest)}`;
}

export function releaseFolder(name: string, tag: string): string {
  return `${RELEASES_FOLDER}/${encodeSegment(name)}/${encodeSegment(tag)}`;
}

export const RECORD_FILE_RE = /^(\d{8,})-([0-9a-f]{16})\.json$/;

/**
 * A release record's file name: the version, zero-padded so that names sort by version, and the
 * first 16 hex digits of the record's own digest, so that two producers that pick the same next
 * version still write two distinct files. Order: version, then this name (total and deterministic).
 */
export function recordFileName(version: number, recordDigest: string): string {
  if (!Number.isSafeInteger(version) || version < 1) throw new TarportError('INTERNAL', `internal error: bad version ${version}`);
  return `${String(version).padStart(8, '0')}-${hexOf(recordDigest).slice(0, 16)}.json`;
}

export function parseRecordFileName(file: string): { version: number; idPrefix: string } | undefined {
  const m = RECORD_FILE_RE.exec(file);
  if (!m) return undefined;
  return { version: Number(m[1]), idPrefix: m[2]! };
}

const CATALOG_FILE_RE = /^(\d{12})-([0-9a-f]{16})\.json$/;

/** The immutable copy of a catalog: its sequence, zero-padded so that names sort by it, and its digest. */
export function catalogFileName(sequence: number, catalogDigest: string): string {
  return `${String(sequence).padStart(12, '0')}-${hexOf(catalogDigest).slice(0, 16)}.json`;
}

export function parseCatalogFileName(file: string): { sequence: number; idPrefix: string } | undefined {
  const m = CATALOG_FILE_RE.exec(file);
  return m ? { sequence: Number(m[1]), idPrefix: m[2]! } : undefined;
}

export function recordKey(name: string, tag: string, file: string): string {
  return `${releaseFolder(name, tag)}/${file}`;
}

/** A temporary key in the same folder as `key`: hidden on Unix, valid on FAT, never a final name. */
export function tempKeyFor(key: string): string {
  const i = key.lastIndexOf('/');
  const folder = i < 0 ? '' : key.slice(0, i + 1);
  const rand = randomBytes(8).toString('hex');
  return `${folder}.tarport-${rand}.tmp`;
}

/**
 * The temporary name of a spooled blob on a store where a write is atomic (S3): the same for every
 * run, so that an upload a killed run left half done is resumed by the next (the S3 transport keeps
 * a journal by name). Two pushes of one blob write the same bytes there, each write whole or not at all.
 */
export function stableTempKeyFor(digest: string): string {
  return `${BLOBS_FOLDER}/.tarport-${hexOf(digest)}.tmp`;
}

export function isTempName(file: string): boolean {
  return file.startsWith('.tarport-') && file.endsWith('.tmp');
}
