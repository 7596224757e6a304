import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { Digester, Verifier, sha256 } from '../crypto/index.js';
import { TarportError, isTarportError } from '../errors.js';
import type { ByteSink, Transport } from '../transport/index.js';
import { drainInto } from '../transport/source.js';
import {
  BLOBS_FOLDER,
  CATALOG_KEY,
  FORMAT_KEY,
  INDEX_KEY,
  OCI_LAYOUT_KEY,
  RELEASES_FOLDER,
  blobKey,
  parseRecordFileName,
  recordFileName,
  recordKey,
  releaseFolder,
  tempKeyFor,
} from './layout.js';
import { decodeSegment } from './names.js';
import {
  CATALOG_SCHEMA,
  CatalogSchema,
  MEDIA_TYPES,
  ReleaseRecordSchema,
  compareReleases,
  parseWith,
  serialize,
  type Catalog,
  type CatalogEntry,
  type ReleaseRecord,
} from './records.js';

/** Signs bytes (a record, the catalog): returns a detached armored signature. Injected by the caller. */
export type Sign = (data: Buffer) => Promise<Buffer>;

export const MAX_SIGNATURE_BYTES = 64 << 10;

/** Objects stored in parts: `<hex>.parts` lists them, `<hex>.p0001`… hold them. */
export const PartListSchema = z.strictObject({
  digest: z.string(),
  size: z.number().int().nonnegative(),
  parts: z.array(z.strictObject({ digest: z.string(), size: z.number().int().nonnegative() })),
});
export type PartList = z.infer<typeof PartListSchema>;
export const partsKey = (digest: string) => `${blobKey(digest)}.parts`;
export const partKey = (digest: string, i: number) => `${blobKey(digest)}.p${String(i + 1).padStart(4, '0')}`;

/** The detached signature beside a file. */
export const signatureKey = (key: string) => `${key}.asc`;

/** Named limits for everything read into memory from a repository. */
export const MAX_RECORD_BYTES = 4 << 20;
export const MAX_CATALOG_BYTES = 64 << 20;
export const MAX_SMALL_BLOB_BYTES = 16 << 20;

export const FORMAT_VERSION = 1;

/** A blob written under a temporary name; `commit` renames it into place, `discard` removes it. */
export interface StagedBlob {
  readonly digest: string;
  readonly size: number;
  /** False when the repository held the blob already and nothing was sent. */
  readonly uploaded: boolean;
  commit(): Promise<void>;
  discard(): Promise<void>;
}

export interface ReleaseRef {
  readonly name: string;
  readonly tag: string;
  readonly version: number;
  /** The record's file name. */
  readonly record: string;
}

/**
 * The repository format (docs/repo-format.md) over any transport. Knows paths, records, the catalog
 * and the publish order; knows nothing of which transport carries it.
 */
export class Repository {
  constructor(readonly transport: Transport) {}

  get location(): string {
    return this.transport.location;
  }

  // ---- reading ---------------------------------------------------------------------------------

  async readSmall(key: string, limit: number, what: string, signal?: AbortSignal): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let n = 0;
    const stream = await this.transport.read(key, { signal });
    for await (const c of stream) {
      n += (c as Buffer).length;
      if (n > limit) {
        stream.destroy();
        throw new TarportError('INTEGRITY', `${what} in ${this.location} is larger than the ${limit} bytes allowed`);
      }
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  }

  /** Size and modification time of the catalog: one small request, for cheap polling. */
  async catalogStat(signal?: AbortSignal): Promise<{ size: number; mtime: number } | undefined> {
    const st = await this.transport.stat(CATALOG_KEY, signal);
    return st && !st.isDir ? { size: st.size, mtime: st.mtime?.getTime() ?? 0 } : undefined;
  }

  /** The catalog with its digest, or undefined when the repository has none yet. */
  async readCatalog(signal?: AbortSignal): Promise<{ catalog: Catalog; bytes: Buffer } | undefined> {
    let bytes: Buffer;
    try {
      bytes = await this.readSmall(CATALOG_KEY, MAX_CATALOG_BYTES, 'catalog', signal);
    } catch (e) {
      if (isTarportError(e, 'NOT_FOUND')) return undefined;
      throw e;
    }
    return { catalog: parseWith(CatalogSchema, bytes, `catalog ${CATALOG_KEY} of ${this.location}`), bytes };
  }

  /**
   * Reads a release record. With `expect`, the bytes must match the digest and size the catalog pins
   * (read stops at the declared size). The record must describe the name, tag and version its path says.
   */
  async readRecord(ref: ReleaseRef, expect?: { digest: string; size: number }, signal?: AbortSignal): Promise<{ record: ReleaseRecord; bytes: Buffer; digest: string }> {
    const key = recordKey(ref.name, ref.tag, ref.record);
    const what = `release record ${ref.name}:${ref.tag} v${ref.version} (${key})`;
    // the read limit is the record cap, whatever size the catalog claims
    if (expect && expect.size > MAX_RECORD_BYTES) throw new TarportError('INTEGRITY', `${what}: the catalog pins ${expect.size} bytes, more than the ${MAX_RECORD_BYTES} a release record may have`);
    const bytes = await this.readSmall(key, expect ? expect.size : MAX_RECORD_BYTES, what, signal).catch((e: unknown) => {
      if (expect && isTarportError(e, 'INTEGRITY')) {
        throw new TarportError('DIGEST_MISMATCH', `${what}: digest mismatch, the file is larger than the ${expect.size} bytes the catalog pins`);
      }
      throw e;
    });
    const digest = sha256(bytes);
    if (expect && (digest !== expect.digest || bytes.length !== expect.size)) {
      throw new TarportError('DIGEST_MISMATCH', `${what}: digest mismatch, the catalog pins ${expect.digest} (${expect.size} bytes), the file has ${digest} (${bytes.length} bytes)`);
    }
    const parsed = parseRecordFileName(ref.record);
    if (!parsed || !digest.slice(7).startsWith(parsed.idPrefix)) {
      throw new TarportError('INTEGRITY', `${what}: the file name does not match the record's digest ${digest}`);
    }
    const record = parseWith(ReleaseRecordSchema, bytes, `release record ${key}`);
    if (record.name !== ref.name || record.tag !== ref.tag || record.version !== ref.version) {
      throw new TarportError('INTEGRITY', `${what}: the record describes ${record.name}:${record.tag} v${record.version}, not what its path says`);
    }
    return { record, bytes, digest };
  }

  /** Every release of one tag, in order (oldest first), from the folder listing (the truth). */
  async listReleases(name: string, tag: string, signal?: AbortSignal): Promise<ReleaseRef[]> {
    const out: ReleaseRef[] = [];
    for await (const e of this.transport.list(releaseFolder(name, tag), signal)) {
      if (e.isDir) continue;
      const p = parseRecordFileName(e.name);
      if (p) out.push({ name, tag, version: p.version, record: e.name });
    }
    return out.sort(compareReleases);
  }

  /** Every name:tag that has releases, from the folder listing. */
  async listTags(signal?: AbortSignal): Promise<{ name: string; tag: string }[]> {
    const out: { name: string; tag: string }[] = [];
    for await (const n of this.transport.list(RELEASES_FOLDER, signal)) {
      if (!n.isDir) continue;
      for await (const t of this.transport.list(`${RELEASES_FOLDER}/${n.name}`, signal)) {
        if (t.isDir) out.push({ name: decodeSegment(n.name), tag: decodeSegment(t.name) });
      }
    }
    return out;
  }

  async blobInfo(digest: string, signal?: AbortSignal): Promise<{ size: number; split?: boolean } | undefined> {
    const st = await this.transport.stat(blobKey(digest), signal);
    if (st && !st.isDir) return { size: st.size };
    const parts = await this.readParts(digest, signal);
    return parts ? { size: parts.size, split: true } : undefined;
  }

  /** The part list of an object stored in pieces (media with a file size limit), if it is. */
  async readParts(digest: string, signal?: AbortSignal): Promise<PartList | undefined> {
    const key = partsKey(digest);
    if (!(await this.transport.stat(key, signal))) return undefined;
    const list = parseWith(PartListSchema, await this.readSmall(key, MAX_RECORD_BYTES, `part list of ${digest}`, signal), `part list ${key}`);
    if (list.digest !== digest || list.parts.reduce((n, p) => n + p.size, 0) !== list.size) {
      throw new TarportError('INTEGRITY', `part list ${key} does not add up to ${digest}`);
    }
    return list;
  }

  /** A blob's bytes, from `offset`, verified against digest and size when read from the start. */
  async readBlob(desc: { digest: string; size: number }, opts: { offset?: number; signal?: AbortSignal; verify?: boolean } = {}): Promise<Readable> {
    const whole = await this.transport.stat(blobKey(desc.digest), opts.signal);
    const src = whole ? await this.transport.read(blobKey(desc.digest), { offset: opts.offset ?? 0, signal: opts.signal }) : await this.readSplit(desc.digest, opts.offset ?? 0, opts.signal);
    if (opts.verify === false || (opts.offset ?? 0) > 0) return src;
    const v = new Verifier(desc, `object ${desc.digest} in ${this.location}`);
    pipeline(src, v).catch(() => undefined);
    return v;
  }

  /**
   * A blob's bytes from `offset` into `sink` (see ByteSink: the chunks are lent), unverified: the
   * caller checks them, as it hashes them anyway on their way to disk. An object stored whole is
   * read without a stream in between (FTP lends its socket buffers); parts go through readSplit.
   */
  async readBlobTo(desc: { digest: string; size: number }, sink: ByteSink, opts: { offset?: number; signal?: AbortSignal } = {}): Promise<number> {
    const key = blobKey(desc.digest);
    if (await this.transport.stat(key, opts.signal)) return this.transport.readTo(key, sink, { offset: opts.offset ?? 0, ...(opts.signal ? { signal: opts.signal } : {}) });
    return drainInto(await this.readSplit(desc.digest, opts.offset ?? 0, opts.signal), sink);
  }

  /** Reassembles an object stored in parts, each part checked against its own digest. */
  private async readSplit(digest: string, offset: number, signal?: AbortSignal): Promise<Readable> {
    const list = await this.readParts(digest, signal);
    if (!list) throw new TarportError('NOT_FOUND', `object ${digest} is not in ${this.location}`);
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    (async () => {
      let start = 0;
      for (const [i, p] of list.parts.entries()) {
        const end = start + p.size;
        if (end > offset) {
          const key = partKey(digest, i);
          const skip = Math.max(0, offset - start);
          const src = await this.transport.read(key, { offset: skip, signal });
          const check = skip === 0 ? new Verifier(p, `part ${i + 1} of ${digest} in ${this.location}`) : new PassThrough();
          await pipeline(src, check, out, { end: false, signal });
        }
        start = end;
      }
      out.end();
    })().catch((e: unknown) => out.destroy(e as Error));
    return out;
  }

  /**
   * Stores an object in parts of at most `maxPart` bytes (FAT32 holds files below 4 GiB), each with
   * its own digest, and a part list; every piece goes to a temporary name first.
   */
  async putSplit(desc: { digest: string; size: number }, open: () => Promise<Readable>, maxPart: number, signal?: AbortSignal): Promise<void> {
    const parts: { digest: string; size: number }[] = [];
    const src = await open();
    const reader = src[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let carry: Buffer = Buffer.alloc(0);
    let done = false;
    for (let i = 0; !done || carry.length > 0; i++) {
      // one part: at most maxPart bytes, pulled from the stream as the transport asks for them
      const dg = new Digester();
      let sent = 0;
      const piece = Readable.from(
        (async function* () {
          while (sent < maxPart) {
            if (carry.length === 0) {
              const r = await reader.next();
              if (r.done) {
                done = true;
                return;
              }
              carry = r.value;
            }
            const take = carry.subarray(0, maxPart - sent);
            carry = carry.subarray(take.length);
            sent += take.length;
            yield take;
          }
        })(),
      );
      const tmp = tempKeyFor(partKey(desc.digest, i));
      try {
        await this.transport.write(tmp, () => piece.pipe(dg), { signal });
        if (sent === 0) {
          await this.transport.remove(tmp);
          break;
        }
        await this.transport.rename(tmp, partKey(desc.digest, i), signal);
      } catch (e) {
        await this.transport.remove(tmp).catch(() => undefined);
        throw e;
      }
      parts.push({ digest: dg.digest(), size: sent });
      if (carry.length === 0 && done) break;
    }
    const total = parts.reduce((n, p) => n + p.size, 0);
    if (total !== desc.size) throw new TarportError('DIGEST_MISMATCH', `object ${desc.digest}: ${total} bytes arrived, ${desc.size} expected`);
    await this.putAtomic(partsKey(desc.digest), serialize({ digest: desc.digest, size: desc.size, parts }), signal);
  }

  async readSmallBlob(desc: { digest: string; size: number }, what: string, signal?: AbortSignal): Promise<Buffer> {
    if (desc.size > MAX_SMALL_BLOB_BYTES) throw new TarportError('INTEGRITY', `${what} ${desc.digest} is ${desc.size} bytes, more than the ${MAX_SMALL_BLOB_BYTES} allowed`);
    const chunks: Buffer[] = [];
    for await (const c of await this.readBlob(desc, { signal })) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  // ---- writing ---------------------------------------------------------------------------------

  /** Writes bytes to a key atomically: a temporary name in the same folder, then a rename. */
  async putAtomic(key: string, bytes: Buffer, signal?: AbortSignal): Promise<void> {
    const tmp = tempKeyFor(key);
    try {
      await this.transport.write(tmp, () => Readable.from([bytes]), { signal });
      await this.transport.rename(tmp, key, signal);
    } catch (e) {
      await this.transport.remove(tmp).catch(() => undefined);
      throw e;
    }
  }

  /**
   * Streams a blob to a temporary name in blobs/sha256/, hashing it on the way. Nothing is visible
   * under a final name until `commit`. For a remote repository the bytes are spooled to a local
   * temporary file first: an upload that breaks can then resume or start over from the file, and a
   * blob the server already holds is not sent at all.
   */
  async stageBlob(source: Readable, signal?: AbortSignal): Promise<StagedBlob> {
    if (!this.transport.capabilities.local) return this.stageViaSpool(source, signal);
    const tmp = tempKeyFor(`${BLOBS_FOLDER}/x`);
    const digester = new Digester();
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    let opened = false;
    const feeding = pipeline(source, digester, out, { signal });
    const writing = this.transport.write(
      tmp,
      () => {
        if (opened) throw new TarportError('INTERNAL', 'internal error: a staged blob cannot be replayed');
        opened = true;
        return out;
      },
      { signal },
    );
    const [f, w] = await Promise.allSettled([feeding, writing]);
    if (f.status === 'rejected' || w.status === 'rejected') {
      out.destroy();
      await this.transport.remove(tmp).catch(() => undefined);
      throw f.status === 'rejected' ? f.reason : (w as PromiseRejectedResult).reason;
    }
    return this.staged(tmp, digester.digest(), digester.bytes, signal);
  }

  private async stageViaSpool(source: Readable, signal?: AbortSignal): Promise<StagedBlob> {
    const dir = await mkdtemp(join(tmpdir(), 'tarport-spool-'));
    const file = join(dir, 'blob');
    try {
      const digester = new Digester();
      await pipeline(source, digester, createWriteStream(file, { highWaterMark: 1 << 20 }), { signal });
      const digest = digester.digest();
      const size = digester.bytes;
      const have = await this.blobInfo(digest, signal);
      if (have?.size === size) {
        // stored already (another tag, an interrupted earlier run): nothing to send, nothing to rename
        return { digest, size, uploaded: false, commit: async () => undefined, discard: async () => undefined };
      }
      const tmp = tempKeyFor(blobKey(digest));
      try {
        await this.transport.write(tmp, { file }, { signal });
      } catch (e) {
        await this.transport.remove(tmp).catch(() => undefined);
        throw e;
      }
      return this.staged(tmp, digest, size, signal);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  private staged(tmp: string, digest: string, size: number, signal?: AbortSignal): StagedBlob {
    const transport = this.transport;
    return {
      digest,
      size,
      uploaded: true,
      async commit() {
        await transport.rename(tmp, blobKey(digest), signal);
      },
      async discard() {
        await transport.remove(tmp).catch(() => undefined);
      },
    };
  }

  /** Writes a small blob unless it exists already. */
  async putSmallBlob(bytes: Buffer, signal?: AbortSignal): Promise<{ digest: string; size: number }> {
    const digest = sha256(bytes);
    const have = await this.blobInfo(digest, signal);
    if (!have || have.size !== bytes.length) await this.putAtomic(blobKey(digest), bytes, signal);
    return { digest, size: bytes.length };
  }

  /** Writes an immutable release record; returns its file name, digest and size. */
  async writeRecord(record: ReleaseRecord, signal?: AbortSignal, sign?: Sign): Promise<{ file: string; digest: string; size: number; bytes: Buffer }> {
    const bytes = serialize(record);
    const digest = sha256(bytes);
    const file = recordFileName(record.version, digest);
    const key = recordKey(record.name, record.tag, file);
    // the signature first: a reader that sees the record can always get its signature
    if (sign) await this.putAtomic(signatureKey(key), await sign(bytes), signal);
    await this.putAtomic(key, bytes, signal);
    return { file, digest, size: bytes.length, bytes };
  }

  /** The detached signature of a file, or undefined when there is none. */
  async readSignature(key: string, signal?: AbortSignal): Promise<Buffer | undefined> {
    try {
      return await this.readSmall(signatureKey(key), MAX_SIGNATURE_BYTES, `signature of ${key}`, signal);
    } catch (e) {
      if (isTarportError(e, 'NOT_FOUND')) return undefined;
      throw e;
    }
  }

  /**
   * Merges entries into the catalog and writes it (sequence + 1). Per name:tag the later release in
   * the total order wins, so a producer never replaces a newer release with an older one. FTP has no
   * exclusive create, so two producers may race here: each re-reads after writing and merges again
   * until its entries are in (bounded); the catalog can always be rebuilt from releases/ (`rebuild`).
   */
  async updateCatalog(entries: readonly CatalogEntry[], ttlMs: number, signal?: AbortSignal, sign?: Sign): Promise<Catalog> {
    for (let attempt = 0; ; attempt++) {
      const current = await this.readCatalog(signal);
      const byRef = new Map<string, CatalogEntry>();
      for (const e of current?.catalog.releases ?? []) byRef.set(`${e.name}:${e.tag}`, e);
      for (const e of entries) {
        const k = `${e.name}:${e.tag}`;
        const old = byRef.get(k);
        if (!old || compareReleases(old, e) < 0) byRef.set(k, e);
      }
      const now = new Date();
      const catalog: Catalog = {
        schema: CATALOG_SCHEMA,
        sequence: (current?.catalog.sequence ?? 0) + 1,
        created: now.toISOString(),
        expires: new Date(now.getTime() + ttlMs).toISOString(),
        releases: [...byRef.values()].sort((a, b) => (a.name + ':' + a.tag < b.name + ':' + b.tag ? -1 : 1)),
      };
      const bytes = serialize(catalog);
      await this.putAtomic(CATALOG_KEY, bytes, signal);
      // a reader between these two writes sees a signature that does not match: it reads again
      if (sign) await this.putAtomic(signatureKey(CATALOG_KEY), await sign(bytes), signal);
      else await this.transport.remove(signatureKey(CATALOG_KEY), signal);
      const check = await this.readCatalog(signal);
      const landed = entries.every((e) => {
        const got = check?.catalog.releases.find((r) => r.name === e.name && r.tag === e.tag);
        return got !== undefined && compareReleases(got, e) >= 0;
      });
      if (landed) {
        await this.writeIndex(check!.catalog, signal);
        return check!.catalog;
      }
      if (attempt >= 5) throw new TarportError('IO', `catalog of ${this.location} keeps changing under us (another producer?); run again, or run 'tarport check' to rebuild it`);
      await new Promise((r) => setTimeout(r, 200 + Math.random() * 500));
    }
  }

  /** index.json (the OCI view of the current image releases) and the format markers. */
  async writeIndex(catalog: Catalog, signal?: AbortSignal): Promise<void> {
    const manifests = catalog.releases
      .filter((e) => e.manifest)
      .map((e) => ({ ...e.manifest!, annotations: { 'org.opencontainers.image.ref.name': `${e.name}:${e.tag}` } }));
    const index = { schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests };
    await this.putAtomic(INDEX_KEY, serialize(index), signal);
    if (!(await this.transport.stat(OCI_LAYOUT_KEY, signal))) {
      await this.putAtomic(OCI_LAYOUT_KEY, Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })), signal);
    }
    if (!(await this.transport.stat(FORMAT_KEY, signal))) {
      await this.putAtomic(FORMAT_KEY, serialize({ format: 'tarport', version: FORMAT_VERSION }), signal);
    }
  }

  /** The current catalog entry of every tag, rebuilt from releases/ (the catalog is only a cache). */
  async rebuildEntries(signal?: AbortSignal): Promise<CatalogEntry[]> {
    const out: CatalogEntry[] = [];
    for (const { name, tag } of await this.listTags(signal)) {
      const refs = await this.listReleases(name, tag, signal);
      const last = refs.at(-1);
      if (!last) continue;
      const { record, bytes, digest } = await this.readRecord(last, undefined, signal);
      out.push(catalogEntryOf(record, last.record, digest, bytes.length));
    }
    return out;
  }
}

export function catalogEntryOf(record: ReleaseRecord, file: string, digest: string, size: number): CatalogEntry {
  return {
    name: record.name,
    tag: record.tag,
    version: record.version,
    kind: record.kind,
    created: record.created,
    record: file,
    digest,
    size,
    ...(record.manifest ? { manifest: record.manifest } : {}),
  };
}
