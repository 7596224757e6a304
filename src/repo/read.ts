import { sha256 } from '../crypto/index.js';
import { TarportError, isRefusalCode, isTarportError } from '../errors.js';
import { RELEASES_FOLDER, parseRecordFileName, recordKey, releaseFolder } from './layout.js';
import { decodeSegment } from './names.js';
import { MAX_RECORD_BYTES } from './objects.js';
import { ReleaseRecordSchema, compareReleases, parseWith, type ReleaseRecord } from './records.js';
import type { Store } from './store.js';

// Verified readers: what they hand out says what was checked, and only they can make it.

export const MAX_SIGNATURE_BYTES = 64 << 10;

/** The detached signature beside a file. */
export const signatureKey = (key: string) => `${key}.asc`;

/** Checks a signature (injected: repo/ knows no OpenPGP); throws when it does not hold. */
export type CheckSignature = (data: Buffer, signature: Buffer | undefined, what: string) => Promise<unknown>;

export interface ReleaseRef {
  readonly name: string;
  readonly tag: string;
  readonly version: number;
  /** The record's file name. */
  readonly record: string;
}

declare const verifiedBrand: unique symbol;

/**
 * A release record read and checked by readRecord: it parsed, its path, name, tag and version
 * agree, and its file name carries its digest. `pinned` says whether its bytes also matched the
 * digest and size a catalog pins (mix-and-match refused); `signedBy` what a signature check
 * returned, when one was asked for. The brand makes it impossible to build one elsewhere.
 */
export interface VerifiedRecord<P extends boolean = boolean> {
  readonly ref: ReleaseRef;
  readonly record: ReleaseRecord;
  readonly bytes: Buffer;
  readonly digest: string;
  readonly pinned: P;
  readonly signedBy?: unknown;
  readonly [verifiedBrand]: true;
}

/** A record whose bytes match what the catalog pins: what a consumer may load. */
export type PinnedRecord = VerifiedRecord<true>;

/**
 * Whether a record that failed to read is damaged or gone (a refusal: bad bytes, a bad signature;
 * or removed meanwhile), so that a scan of the releases may pass over it. Any other fault (the link
 * dropped, a read refused, a cancel) says nothing of the record: a scan must not go on without it.
 */
export function unreadableRecord(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code !== undefined && (isRefusalCode(code) || code === 'NOT_FOUND');
}

export function readRecord(store: Store, ref: ReleaseRef, pin: { digest: string; size: number }, opts?: { verify?: CheckSignature; signal?: AbortSignal }): Promise<PinnedRecord>;
export function readRecord(store: Store, ref: ReleaseRef, pin?: undefined, opts?: { verify?: CheckSignature; signal?: AbortSignal }): Promise<VerifiedRecord>;
/**
 * Reads a release record. With `pin`, the bytes must match the digest and size the catalog pins
 * (read stops at the pinned size). With `verify`, its detached signature must hold.
 */
export async function readRecord(store: Store, ref: ReleaseRef, pin?: { digest: string; size: number }, opts: { verify?: CheckSignature; signal?: AbortSignal } = {}): Promise<VerifiedRecord> {
  const key = recordKey(ref.name, ref.tag, ref.record);
  const what = `release record ${ref.name}:${ref.tag} v${ref.version} (${key})`;
  // the read limit is the record cap, whatever size the catalog claims
  if (pin && pin.size > MAX_RECORD_BYTES) throw new TarportError('INTEGRITY', `${what}: the catalog pins ${pin.size} bytes, more than the ${MAX_RECORD_BYTES} a release record may have`);
  const bytes = await store.readSmall(key, pin ? pin.size : MAX_RECORD_BYTES, what, opts.signal).catch((e: unknown) => {
    if (pin && isTarportError(e, 'INTEGRITY')) {
      throw new TarportError('DIGEST_MISMATCH', `${what}: digest mismatch, the file is larger than the ${pin.size} bytes the catalog pins`);
    }
    throw e;
  });
  // over a link, a record shorter than pinned is a transfer cut short, even one the server ended
  // as whole (a refusal would skip the release in the poll agent for good); on this host's disk
  // (a stick) it is a damaged file, refused below
  if (pin && bytes.length < pin.size && !store.transport.capabilities.local) throw new TarportError('CONNECTION', `${what}: the transfer ended after ${bytes.length} of the ${pin.size} bytes the catalog pins`, { retryable: true });
  const digest = sha256(bytes);
  if (pin && (digest !== pin.digest || bytes.length !== pin.size)) {
    throw new TarportError('DIGEST_MISMATCH', `${what}: digest mismatch, the catalog pins ${pin.digest} (${pin.size} bytes), the file has ${digest} (${bytes.length} bytes)`);
  }
  const parsed = parseRecordFileName(ref.record);
  if (!parsed || !digest.slice(7).startsWith(parsed.idPrefix)) {
    throw new TarportError('INTEGRITY', `${what}: the file name does not match the record's digest ${digest}`);
  }
  const record = parseWith(ReleaseRecordSchema, bytes, `release record ${key}`);
  if (record.name !== ref.name || record.tag !== ref.tag || record.version !== ref.version) {
    throw new TarportError('INTEGRITY', `${what}: the record describes ${record.name}:${record.tag} v${record.version}, not what its path says`);
  }
  const signedBy = opts.verify ? await opts.verify(bytes, await readSignature(store, key, opts.signal), `release ${ref.name}:${ref.tag} v${ref.version}`) : undefined;
  return { ref, record, bytes, digest, pinned: pin !== undefined, ...(opts.verify ? { signedBy } : {}) } as VerifiedRecord;
}

/** The detached signature of a file, or undefined when there is none. */
export async function readSignature(store: Store, key: string, signal?: AbortSignal): Promise<Buffer | undefined> {
  return readSignatureFile(store, signatureKey(key), `signature of ${key}`, signal);
}

const ARMOR_BEGIN = '-----BEGIN PGP SIGNATURE-----';
const ARMOR_END = '-----END PGP SIGNATURE-----';

/**
 * A signature file (`.asc`), or undefined when there is none. Signatures have no pinned size, but
 * tarport writes them armored: one that is the start of an armor without its end line, where the
 * server lists the file larger than what came, is a transfer cut short (CONNECTION, tried again),
 * even one the server ended as whole; a refusal would skip the release in the poll agent until the
 * catalog changes. Where the server lists it at the size that came, the file itself is short: damage,
 * which the signature check refuses (and push, check and ls name as an unreadable signature).
 */
export async function readSignatureFile(store: Store, key: string, what: string, signal?: AbortSignal): Promise<Buffer | undefined> {
  const bytes = await store.readOptional(key, MAX_SIGNATURE_BYTES, what, signal);
  if (!bytes || !cutArmor(bytes)) return bytes;
  const listed = (await store.stat(key, signal))?.size;
  if (listed !== undefined && listed > bytes.length) {
    throw new TarportError('CONNECTION', `${what} (${key}): the transfer ended after ${bytes.length} of the ${listed} bytes the server lists, before the end of the signature's armor`, { retryable: true });
  }
  return bytes;
}

/** Whether `bytes` begin as an armored signature does (or are empty) and never reach its end line. */
function cutArmor(bytes: Buffer): boolean {
  const head = bytes.subarray(0, ARMOR_BEGIN.length).toString('latin1');
  return ARMOR_BEGIN.startsWith(head) && !bytes.includes(ARMOR_END, 0, 'latin1');
}

/** Every release of one tag, in order (oldest first), from the folder listing (the truth). */
export async function listReleases(store: Store, name: string, tag: string, signal?: AbortSignal): Promise<ReleaseRef[]> {
  const out: ReleaseRef[] = [];
  for (const e of await store.list(releaseFolder(name, tag), signal)) {
    if (e.isDir) continue;
    const p = parseRecordFileName(e.name);
    if (p) out.push({ name, tag, version: p.version, record: e.name });
  }
  return out.sort(compareReleases);
}

/** Every name:tag that has a release folder, from the folder listing. */
export async function listTags(store: Store, signal?: AbortSignal, onForeign?: (folder: string, why: string) => void): Promise<{ name: string; tag: string }[]> {
  const out: { name: string; tag: string }[] = [];
  for (const n of await store.list(RELEASES_FOLDER, signal)) {
    if (!n.isDir) continue;
    const name = decoded(n.name);
    if (name instanceof TarportError) {
      // a folder no tarport wrote (`New Folder`, a copy by hand): no release of it is known, and it
      // must not stop every push, gc and ls of the repository; check names it (onForeign)
      onForeign?.(`${RELEASES_FOLDER}/${n.name}`, name.message);
      continue;
    }
    for (const t of await store.list(`${RELEASES_FOLDER}/${n.name}`, signal)) {
      if (!t.isDir) continue;
      const tag = decoded(t.name);
      if (tag instanceof TarportError) onForeign?.(`${RELEASES_FOLDER}/${n.name}/${t.name}`, tag.message);
      else out.push({ name, tag });
    }
  }
  return out;
}

function decoded(segment: string): string | TarportError {
  try {
    return decodeSegment(segment);
  } catch (e) {
    if (e instanceof TarportError) return e;
    throw e;
  }
}
