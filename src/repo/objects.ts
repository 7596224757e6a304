import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as z from 'zod';
import { Digester, Verifier, sha256 } from '../crypto/index.js';
import { TarportError, isSystemError, isTarportError, wrapSystemError } from '../errors.js';
import { givingBack } from '../lending.js';
import type { ByteSink } from '../transport/index.js';
import { drainInto } from '../transport/source.js';
import { BLOBS_FOLDER, blobKey, stableTempKeyFor, tempKeyFor } from './layout.js';
import { parseWith, serialize } from './records.js';
import { GrowingFile } from './spool.js';
import type { Store } from './store.js';
import { linkSignals } from '../signals.js';

// Objects: immutable, content-addressed files in blobs/sha256/ (docs/repo-format.md, "Objects").

export const MAX_RECORD_BYTES = 4 << 20;
export const MAX_SMALL_BLOB_BYTES = 16 << 20;

/** Objects stored in parts: `<hex>.parts` lists them, `<hex>.p0001`… hold them. */
export const PartListSchema = z.strictObject({
  digest: z.string(),
  size: z.number().int().nonnegative(),
  parts: z.array(z.strictObject({ digest: z.string(), size: z.number().int().nonnegative() })),
});
export type PartList = z.infer<typeof PartListSchema>;
export const partsKey = (digest: string) => `${blobKey(digest)}.parts`;
export const partKey = (digest: string, i: number) => `${blobKey(digest)}.p${String(i + 1).padStart(4, '0')}`;

/** The name of an object file (whole, part list or part) → the object's digest. */
export function objectOfFile(name: string): string | undefined {
  const hex = /^([0-9a-f]{64})(?:\.parts|\.p\d{4})?$/.exec(name)?.[1];
  return hex ? `sha256:${hex}` : undefined;
}

/** A blob written under a temporary name; `commit` renames it into place, `discard` removes it. */
export interface StagedBlob {
  readonly digest: string;
  readonly size: number;
  /** False when the repository held the blob already and nothing was sent. */
  readonly uploaded: boolean;
  commit(): Promise<void>;
  discard(): Promise<void>;
}

export async function blobInfo(store: Store, digest: string, signal?: AbortSignal): Promise<{ size: number; split?: boolean } | undefined> {
  const st = await store.stat(blobKey(digest), signal);
  if (st && !st.isDir) return { size: st.size };
  const parts = await readParts(store, digest, signal);
  return parts ? { size: parts.size, split: true } : undefined;
}

/** The part list of an object stored in pieces (media with a file size limit), if it is. */
export async function readParts(store: Store, digest: string, signal?: AbortSignal): Promise<PartList | undefined> {
  const key = partsKey(digest);
  if (!(await store.stat(key, signal))) return undefined;
  const list = parseWith(PartListSchema, await store.readSmall(key, MAX_RECORD_BYTES, `part list of ${digest}`, signal), `part list ${key}`);
  if (list.digest !== digest || list.parts.reduce((n, p) => n + p.size, 0) !== list.size) {
    throw new TarportError('INTEGRITY', `part list ${key} does not add up to ${digest}`);
  }
  return list;
}

/** A blob's bytes, from `offset`, verified against digest and size when read from the start. */
export async function readBlob(store: Store, desc: { digest: string; size: number }, opts: { offset?: number; signal?: AbortSignal; verify?: boolean } = {}): Promise<Readable> {
  const whole = await store.stat(blobKey(desc.digest), opts.signal);
  const src = whole
    ? await store.transport.read(blobKey(desc.digest), { offset: opts.offset ?? 0, signal: opts.signal })
    : await readSplit(store, desc.digest, opts.offset ?? 0, opts.signal);
  if (opts.verify === false || (opts.offset ?? 0) > 0) return src;
  const v = new Verifier(desc, `object ${desc.digest} in ${store.location}`, !store.transport.capabilities.local);
  pipeline(src, v).catch(() => undefined);
  return v;
}

/**
 * A blob's bytes from `offset` into `sink` (see ByteSink: the chunks are lent), unverified: the
 * caller checks them, as it hashes them anyway on their way to disk. An object stored whole is
 * read without a stream in between (FTP lends its socket buffers); parts go through readSplit.
 */
export async function readBlobTo(store: Store, desc: { digest: string; size: number }, sink: ByteSink, opts: { offset?: number; signal?: AbortSignal } = {}): Promise<number> {
  const key = blobKey(desc.digest);
  if (await store.stat(key, opts.signal)) return store.transport.readTo(key, sink, { offset: opts.offset ?? 0, ...(opts.signal ? { signal: opts.signal } : {}) });
  return drainInto(await readSplit(store, desc.digest, opts.offset ?? 0, opts.signal), sink);
}

/** Reassembles an object stored in parts, each part checked against its own digest. */
async function readSplit(store: Store, digest: string, offset: number, signal?: AbortSignal): Promise<Readable> {
  const list = await readParts(store, digest, signal);
  if (!list) throw new TarportError('NOT_FOUND', `object ${digest} is not in ${store.location}`);
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  (async () => {
    let start = 0;
    for (const [i, p] of list.parts.entries()) {
      const end = start + p.size;
      if (end > offset) {
        const skip = Math.max(0, offset - start);
        const src = await store.transport.read(partKey(digest, i), { offset: skip, signal });
        const check = skip === 0 ? new Verifier(p, `part ${i + 1} of ${digest} in ${store.location}`, !store.transport.capabilities.local) : new PassThrough();
        await pipeline(src, check, out, { end: false, signal });
      }
      start = end;
    }
    out.end();
  })().catch((e: unknown) => out.destroy(e as Error));
  return out;
}

export async function readSmallBlob(store: Store, desc: { digest: string; size: number }, what: string, signal?: AbortSignal): Promise<Buffer> {
  if (desc.size > MAX_SMALL_BLOB_BYTES) throw new TarportError('INTEGRITY', `${what} ${desc.digest} is ${desc.size} bytes, more than the ${MAX_SMALL_BLOB_BYTES} allowed`);
  const chunks: Buffer[] = [];
  for await (const c of await readBlob(store, desc, { signal })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** One piece of a split object: at most `max` bytes pulled from `reader` as the transport asks. */
function piece(reader: AsyncIterator<Buffer>, state: { carry: Buffer; done: boolean; sent: number }, max: number): Readable {
  return Readable.from(
    (async function* () {
      while (state.sent < max) {
        if (state.carry.length === 0) {
          const r = await reader.next();
          if (r.done) {
            state.done = true;
            return;
          }
          state.carry = r.value;
        }
        const take = state.carry.subarray(0, max - state.sent);
        state.carry = state.carry.subarray(take.length);
        state.sent += take.length;
        yield take;
      }
    })(),
  );
}

/**
 * Stores an object in parts of at most `maxPart` bytes (FAT32 holds files below 4 GiB), each with
 * its own digest, and a part list; every piece goes to a temporary name first.
 */
export async function putSplit(store: Store, desc: { digest: string; size: number }, open: () => Promise<Readable>, maxPart: number, signal?: AbortSignal): Promise<void> {
  const parts: { digest: string; size: number }[] = [];
  const reader = (await open())[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const state = { carry: Buffer.alloc(0), done: false, sent: 0 };
  for (let i = 0; !state.done || state.carry.length > 0; i++) {
    const dg = new Digester();
    state.sent = 0;
    const p = piece(reader, state, maxPart);
    const tmp = tempKeyFor(partKey(desc.digest, i));
    let opened = false;
    // the piece is read from the object's one stream: it cannot be read twice, so a transport that
    // would send it again (a retry) gets a refusal it does not retry, not a stream that never ends;
    // pipeline carries a failed read of the object (a damaged source, a cut link) into the upload
    const part = () => {
      if (opened) throw new TarportError('IO', `part ${i + 1} of ${desc.digest}: cannot be sent again (read once from the source object)`, { retryable: false });
      opened = true;
      pipeline(p, dg).catch(() => undefined);
      return dg;
    };
    try {
      await store.transport.write(tmp, part, { signal });
      if (state.sent === 0) {
        await store.remove(tmp);
        break;
      }
      await store.transport.rename(tmp, partKey(desc.digest, i), signal);
    } catch (e) {
      await store.remove(tmp).catch(() => undefined);
      throw e;
    }
    parts.push({ digest: dg.digest(), size: state.sent });
    if (state.carry.length === 0 && state.done) break;
  }
  const total = parts.reduce((n, p) => n + p.size, 0);
  if (total !== desc.size) throw new TarportError('DIGEST_MISMATCH', `object ${desc.digest}: ${total} bytes arrived, ${desc.size} expected`);
  await store.putAtomic(partsKey(desc.digest), serialize({ digest: desc.digest, size: desc.size, parts }), signal);
  // a whole copy stored before (a cut or damaged one being repaired in parts) would be read first
  // (readBlob, blobInfo): once the parts are complete it goes
  if (await store.stat(blobKey(desc.digest), signal)) await store.remove(blobKey(desc.digest));
}

/**
 * Streams a blob to a temporary name in blobs/sha256/, hashing it on the way. Nothing is visible
 * under a final name until `commit`. For a remote repository the bytes are spooled to a local
 * temporary file first: an upload that breaks can then resume or start over from the file, and a
 * blob the server already holds is not sent at all.
 */
export async function stageBlob(store: Store, source: Readable, signal?: AbortSignal): Promise<StagedBlob> {
  if (!store.transport.capabilities.local) return stageViaSpool(store, source, signal);
  const tmp = tempKeyFor(`${BLOBS_FOLDER}/x`);
  const digester = new Digester();
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let opened = false;
  const feeding = pipeline(source, digester, out, { signal });
  const writing = store.transport.write(
    tmp,
    () => {
      if (opened) throw new TarportError('INTERNAL', 'internal error: a staged blob cannot be replayed');
      opened = true;
      return out;
    },
    { signal },
  );
  // a write that fails (before it read anything, or midway) stops the feeding, which would wait for
  // room in `out` for ever; when the write failed first (`out` still open), its fault is the cause.
  // The write's own pipeline may have destroyed `out` already (a full disk): the feeding then ends
  // with "Premature close", which is the write's fault too, never the cause to report
  let cutByWrite = false;
  writing.catch(() => {
    cutByWrite = !out.destroyed;
    out.destroy();
  });
  const [f, w] = await Promise.allSettled([feeding, writing]);
  if (f.status === 'rejected' || w.status === 'rejected') {
    out.destroy();
    await store.remove(tmp).catch(() => undefined);
    const feedCut = f.status === 'fulfilled' || cutByWrite || (f.reason as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE';
    throw w.status === 'rejected' && feedCut ? w.reason : (f as PromiseRejectedResult).reason;
  }
  return staged(store, tmp, digester.digest(), digester.bytes, signal);
}

async function stageViaSpool(store: Store, source: Readable, signal?: AbortSignal): Promise<StagedBlob> {
  // a store whose writes are atomic (S3) shares one temporary name per digest: that needs the digest first
  if (store.transport.capabilities.atomicWrite !== true) return stageWhileSpooling(store, source, signal);
  const dir = await spoolFolder();
  const file = join(dir, 'blob');
  try {
    const digester = new Digester();
    // the spool file is the last holder of each chunk: lent buffers go back for reuse once written
    await pipeline(source, digester, givingBack(createWriteStream(file, { highWaterMark: 1 << 20 })), { signal }).catch((e: unknown) => {
      throw spoolFault(e, dir);
    });
    const digest = digester.digest();
    const size = digester.bytes;
    const have = await blobInfo(store, digest, signal);
    if (have?.size === size) {
      // stored already (another tag, an interrupted earlier run): nothing to send, nothing to rename
      return { digest, size, uploaded: false, commit: async () => undefined, discard: async () => undefined };
    }
    const stable = store.transport.capabilities.atomicWrite === true;
    const tmp = stable ? stableTempKeyFor(digest) : tempKeyFor(blobKey(digest));
    try {
      await store.transport.write(tmp, { file }, { signal });
    } catch (e) {
      await store.remove(tmp).catch(() => undefined);
      throw e;
    }
    return staged(store, tmp, digest, size, signal, stable);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Spools and uploads at once: the upload reads the spool file as it grows (GrowingFile), so a layer
 * goes over the link while it is still being compressed; a broken upload resumes from the spool as
 * before. The digest is known only at the end, so the upload goes to a temporary name of its own,
 * and a blob the server turns out to hold already (an interrupted earlier run) is removed again.
 * Whichever side fails first stops the other, and its error is the one reported (a bad layer is
 * BAD_INPUT, not the upload it cut short).
 */
async function stageWhileSpooling(store: Store, source: Readable, signal?: AbortSignal): Promise<StagedBlob> {
  const dir = await spoolFolder();
  const tmp = tempKeyFor(`${BLOBS_FOLDER}/x`);
  const stop = new AbortController();
  const link = linkSignals([signal, stop.signal]);
  const both = link.signal;
  let first: { error: unknown } | undefined;
  const fail = (e: unknown) => {
    first ??= { error: e };
    stop.abort();
  };
  try {
    const spool = await GrowingFile.create(join(dir, 'blob'));
    const digester = new Digester();
    const spooling = pipeline(source, digester, spool.writer(), { signal: both });
    const sending = store.transport.write(tmp, () => spool.reader(), { signal: both });
    spooling.catch((e: unknown) => fail(spoolFault(e, dir)));
    // a transport says its own faults as TarportErrors; a bare system error here is the spool's,
    // which the upload read from (a full TMPDIR), whichever side heard it first
    sending.catch((e: unknown) => fail(spoolFault(e, dir)));
    const [, sent] = await Promise.allSettled([spooling, sending]);
    if (first) throw first.error;
    const digest = digester.digest();
    const size = digester.bytes;
    if (sent.status === 'fulfilled' && sent.value.size !== size) {
      throw new TarportError('IO', `upload of ${digest} to ${store.location}: ${sent.value.size} bytes sent, ${size} spooled`);
    }
    const have = await blobInfo(store, digest, signal);
    if (have?.size === size) {
      await store.remove(tmp).catch(() => undefined);
      return { digest, size, uploaded: false, commit: async () => undefined, discard: async () => undefined };
    }
    return staged(store, tmp, digest, size, signal);
  } catch (e) {
    await store.remove(tmp).catch(() => undefined);
    throw e;
  } finally {
    link.unlink();
    await rm(dir, { recursive: true, force: true });
  }
}

/** A folder of its own under TMPDIR for one blob's spool; a full or read-only TMPDIR is named as such. */
async function spoolFolder(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'tarport-spool-')).catch((e: unknown) => {
    throw wrapSystemError(e, `spool folder in ${tmpdir()} (TMPDIR)`);
  });
}

/** A spool that failed for this host's reason (a full TMPDIR) says so; a fault of what it read stays as it is. */
function spoolFault(e: unknown, dir: string): unknown {
  return isSystemError(e) ? wrapSystemError(e, `spool of a blob in ${dir} (TMPDIR)`) : e;
}

function staged(store: Store, tmp: string, digest: string, size: number, signal?: AbortSignal, shared = false): StagedBlob {
  return {
    digest,
    size,
    uploaded: true,
    async commit() {
      try {
        await store.transport.rename(tmp, blobKey(digest), signal);
      } catch (e) {
        // a shared temporary name (stableTempKeyFor): another push of this blob may have moved it into place first
        if (!shared || !isTarportError(e, 'NOT_FOUND') || (await blobInfo(store, digest, signal))?.size !== size) throw e;
      }
    },
    async discard() {
      await store.remove(tmp).catch(() => undefined);
    },
  };
}

/** Writes a small blob unless it exists already. */
export async function putSmallBlob(store: Store, bytes: Buffer, signal?: AbortSignal): Promise<{ digest: string; size: number }> {
  const digest = sha256(bytes);
  const have = await blobInfo(store, digest, signal);
  if (!have || have.size !== bytes.length) await store.putAtomic(blobKey(digest), bytes, signal);
  return { digest, size: bytes.length };
}

/**
 * How an object copied from another repository arrives: a stream opened per attempt, or (both ends
 * on this host) a function that writes the verified bytes to a local file itself.
 */
export type ObjectSource = { readonly stream: () => Readable } | { readonly toLocalFile: (path: string) => Promise<void> };

/** Writes an object under a temporary name and renames it into place; removes the temporary file on failure. */
export async function putObject(store: Store, digest: string, source: ObjectSource, signal?: AbortSignal): Promise<void> {
  const tmp = tempKeyFor(blobKey(digest));
  try {
    if ('stream' in source) await store.transport.write(tmp, source.stream, { signal });
    else {
      const local = store.transport.localPath;
      if (!local) throw new TarportError('INTERNAL', `internal error: ${store.location} is not on this host`);
      await source.toLocalFile(await local.call(store.transport, tmp, 'write'));
    }
    await store.transport.rename(tmp, blobKey(digest), signal);
  } catch (e) {
    await store.remove(tmp).catch(() => undefined);
    throw e;
  }
}

/** The local file of an object stored whole on this host, or undefined. */
export async function localObjectFile(store: Store, digest: string, signal?: AbortSignal): Promise<string | undefined> {
  const local = store.transport.localPath;
  if (!local || !(await store.stat(blobKey(digest), signal))) return undefined;
  return local.call(store.transport, blobKey(digest), 'read');
}

/** The digest of every object stored whole. */
export async function listObjects(store: Store, signal?: AbortSignal): Promise<string[]> {
  return (await store.list(BLOBS_FOLDER, signal)).filter((o) => !o.isDir && /^[0-9a-f]{64}$/.test(o.name)).map((o) => `sha256:${o.name}`);
}
