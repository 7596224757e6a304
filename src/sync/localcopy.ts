import { constants as fsc, existsSync } from 'node:fs';
import { access, copyFile, open, rm, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname } from 'node:path';
import { makeFolders } from '../folders.js';
import { DigestCheck } from '../crypto/index.js';
import { TarportError, wrapSystemError, wrapWriteError } from '../errors.js';

const CHUNK = 4 << 20;
const FLUSH_EVERY = 16 << 20;

/** Buffers as large as the object (one byte more, to see a file that grew), at most CHUNK. */
const bufferFor = (size: number) => Math.min(CHUNK, size + 1);

/**
 * CHUNK buffers kept for the next object on this thread (each worker thread has its own module,
 * so its own pool). A fresh buffer costs a page fault per 4 KiB on first touch, on every object:
 * perf put page faults at ~8 % of a sync's CPU, and a 2 MiB object faulted in 6 MiB of buffers.
 * Only a copy that ended cleanly gives its buffers back (after a failure a read may still be filling
 * one); at most SPARE are kept.
 */
const pool: Buffer[] = [];
const SPARE = 3;

/** `n` buffers for an object of `size` bytes: from the pool for all but small objects. */
function takeBuffers(n: number, size: number): Buffer[] {
  const len = bufferFor(size);
  if (len < 256 << 10) return Array.from({ length: n }, () => Buffer.allocUnsafe(len));
  return Array.from({ length: n }, () => (pool.pop() ?? Buffer.allocUnsafe(CHUNK)).subarray(0, len));
}

function giveBack(bufs: readonly Buffer[]): void {
  for (const b of bufs) {
    if (b.buffer.byteLength === CHUNK && b.byteOffset === 0 && pool.length < SPARE) pool.push(Buffer.from(b.buffer, 0, CHUNK));
  }
}

/**
 * Opens a repository file to read it as the directory transport does: a symbolic link is not
 * followed (the transport checked the path; this closes the race with a link put in place since),
 * a FIFO does not block the open, and anything but a plain file is refused (exit 3).
 */
async function openPlain(path: string, what: string): Promise<FileHandle> {
  const fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK).catch((e: unknown) => {
    throw (e as NodeJS.ErrnoException).code === 'ELOOP' ? notPlain(what, e) : wrapSystemError(e, `read ${what}`);
  });
  if (!(await fh.stat()).isFile()) {
    await fh.close();
    throw notPlain(what);
  }
  return fh;
}

const notPlain = (what: string, cause?: unknown) =>
  new TarportError('INTEGRITY', `read ${what}: not a plain file (a link or a FIFO put in the repository); refusing`, { ...(cause ? { cause } : {}), retryable: false });

/**
 * Where the kernel can copy: a file opened here is named /proc/self/fd/N, so fs.copyFile (Linux:
 * copy_file_range, else sendfile) copies the very file that openPlain checked, never a link put in
 * its place since. Without /proc the copy goes through buffers (copyThroughBuffers).
 */
const kernelCopy = existsSync('/proc/self/fd');
/**
 * What a file system answers when fs.copyFile cannot work there: libuv's copy also gives the target
 * the source's mode (fchmod), which a FUSE stick (fusefat) does not implement. The copy then goes
 * through buffers.
 */
const NO_KERNEL_COPY = new Set(['ENOSYS', 'ENOTSUP', 'EOPNOTSUPP']);

/**
 * Copies one local file to another and checks the digest of what was written; the target is durable
 * (fsync) before this returns, and removed on any failure. The kernel copies (copy_file_range: no
 * bytes through this process), then the target is read back from the page cache and hashed while its
 * fsync runs beside the hash: on ext4, write(2) from a buffer cost 4x the CPU of the kernel's own
 * copy (perf: copy_folio_from_iter_atomic, ~30 % of a sync), so reading the bytes a second time
 * costs less than one pass that writes them from a buffer (292 MiB in 6 objects: 0.67 CPU seconds
 * instead of 1.5, 1.0 s wall instead of 2.7-4.2 s). The hash is of the target's bytes, not the
 * source's: a corrupt source is refused all the same, and what reached DST is what was checked.
 * An abort is seen between the copy and the hash and every 4 MiB of the hash: the copy of one
 * object runs to its end first (a second signal ends the process at once).
 */
export async function copyVerified(
  from: string,
  to: string,
  expected: { digest: string; size: number },
  what: string,
  signal?: AbortSignal,
  onBytes?: (n: number) => void,
): Promise<void> {
  if (!kernelCopy) return copyThroughBuffers(from, to, expected, what, signal, onBytes);
  let src: FileHandle | undefined;
  let dst: FileHandle | undefined;
  let made = false;
  try {
    src = await openPlain(from, what);
    sizeCheck((await src.stat()).size, expected, what); // a wrong size is refused before a byte is copied
    await makeFolders(dirname(to));
    // a temporary name of its own: never there before (COPYFILE_EXCL: O_EXCL, so no link followed,
    // and a file found there is neither written nor removed)
    made = true;
    const kernelCopied = await copyFile(`/proc/self/fd/${src.fd}`, to, fsc.COPYFILE_EXCL).then(
      () => true,
      (e: unknown) => {
        const code = (e as NodeJS.ErrnoException).code ?? '';
        if (code === 'EEXIST') made = false;
        if (!NO_KERNEL_COPY.has(code)) throw e;
        return false;
      },
    );
    await src.close();
    src = undefined;
    if (!kernelCopied) {
      await rm(to, { force: true });
      made = false;
      return await copyThroughBuffers(from, to, expected, what, signal, onBytes);
    }
    signal?.throwIfAborted();
    dst = await open(to, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    const d = dst;
    const syncing = d.sync(); // write-back runs while the hash reads the page cache
    syncing.catch(() => undefined); // awaited below; a failed hash must not leave it unhandled
    await hashFile(d, expected, what, signal, onBytes);
    await syncing;
    await dst.close();
    dst = undefined;
  } catch (e) {
    await dst?.close().catch(() => undefined);
    dst = undefined;
    if (made) await rm(to, { force: true }).catch(() => undefined);
    if (e instanceof TarportError) throw e;
    throw await wrapWriteError(e, `copy ${what} to ${to}`, dirname(to));
  } finally {
    await src?.close().catch(() => undefined);
  }
}

/** Refuses a file whose size is not the declared one, in DigestCheck's words. */
function sizeCheck(size: number, expected: { size: number }, what: string): void {
  if (size === expected.size) return;
  const message = size > expected.size ? `${what}: more bytes than the ${expected.size} declared` : `${what}: size mismatch, expected ${expected.size} bytes, got ${size}`;
  throw new TarportError('DIGEST_MISMATCH', message, { retryable: false });
}

/** Reads an open file from its start and checks its digest (throws DIGEST_MISMATCH), two buffers in rotation. */
async function hashFile(fh: FileHandle, expected: { digest: string; size: number }, what: string, signal?: AbortSignal, onBytes?: (n: number) => void): Promise<void> {
  const check = new DigestCheck(expected, what);
  const bufs = takeBuffers(2, expected.size);
  let pos = 0;
  let i = 0;
  let reading = fh.read(bufs[0]!, 0, bufs[0]!.length, 0);
  for (;;) {
    const { bytesRead } = await reading;
    if (bytesRead === 0) break;
    signal?.throwIfAborted();
    const cur = bufs[i % 2]!.subarray(0, bytesRead);
    pos += bytesRead;
    reading = fh.read(bufs[(i + 1) % 2]!, 0, bufs[0]!.length, pos);
    reading.catch(() => undefined); // awaited next round; an early exit must not leave it unhandled
    check.update(cur);
    onBytes?.(cur.length);
    i++;
  }
  giveBack(bufs); // the last read has ended
  check.finish();
}

/**
 * copyVerified where the kernel cannot copy a checked file (no /proc): reads, hashes and writes in
 * one pass, three buffers in rotation (read n+1, hash n, write n-1) on libuv's thread pool, with
 * early write-back every 16 MiB so that the final fsync finds little left.
 */
export async function copyThroughBuffers(
  from: string,
  to: string,
  expected: { digest: string; size: number },
  what: string,
  signal?: AbortSignal,
  onBytes?: (n: number) => void,
): Promise<void> {
  const check = new DigestCheck(expected, what);
  let src: FileHandle | undefined;
  let dst: FileHandle | undefined;
  try {
    src = await openPlain(from, what);
    await makeFolders(dirname(to));
    // a temporary name of its own: never there before, and never a link followed
    dst = await open(to, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o666);
    const bufs = takeBuffers(3, expected.size);
    const s = src;
    const d = dst;
    let pos = 0;
    let i = 0;
    let reading = s.read(bufs[0]!, 0, bufs[0]!.length, 0);
    let writing: Promise<unknown> = Promise.resolve();
    let flushing: Promise<unknown> | undefined;
    let flushedAt = 0;
    for (;;) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      signal?.throwIfAborted();
      const cur = bufs[i % 3]!.subarray(0, bytesRead);
      const at = pos;
      pos += bytesRead;
      // the buffer this read fills was last written two rounds ago; that write has been awaited
      reading = s.read(bufs[(i + 1) % 3]!, 0, bufs[0]!.length, pos);
      reading.catch(() => undefined); // awaited next round; an early exit must not leave it unhandled
      check.update(cur);
      await writing;
      writing = writeAll(d, cur, at);
      writing.catch(() => undefined);
      onBytes?.(cur.length);
      // start write-back early, one flush in flight at a time, so the final fsync finds little left
      if (pos - flushedAt >= FLUSH_EVERY && !flushing) {
        flushedAt = pos;
        const w = writing;
        flushing = w.then(() => d.datasync()).then(
          () => (flushing = undefined),
          () => (flushing = undefined),
        );
      }
      i++;
    }
    await writing;
    await flushing;
    giveBack(bufs); // every read and write has ended
    check.finish();
    await dst.sync();
    await dst.close();
    dst = undefined;
  } catch (e) {
    await dst?.close().catch(() => undefined);
    dst = undefined;
    await rm(to, { force: true }).catch(() => undefined);
    if (e instanceof TarportError) throw e;
    throw await wrapWriteError(e, `copy ${what} to ${to}`, dirname(to));
  } finally {
    await src?.close().catch(() => undefined);
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off);
    off += bytesWritten;
  }
}

/** Reads a local file and checks its digest (an object already on a local DST: is it intact?). */
export async function checkFile(path: string, expected: { digest: string; size: number }, what: string, signal?: AbortSignal): Promise<boolean> {
  let fh: FileHandle | undefined;
  try {
    fh = await openPlain(path, what);
    await hashFile(fh, expected, what, signal);
    return true;
  } catch (e) {
    if (signal?.aborted) throw e;
    return false;
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

type Job = { op: 'copy'; from: string; to: string } | { op: 'check'; path: string };
type Reply = { id: number; ok?: boolean; bytes?: number; error?: { code: string; message: string; retryable: boolean } };

/**
 * Copies and checks on several threads: SHA-256 runs on the thread that calls `update`, so one
 * thread hashes one object at ~1.5 GB/s and a second object needs a second thread. Lane 0 is this
 * thread; lane k > 0 is a worker thread, started when first used. Without the built worker module
 * (running from sources) every lane runs here.
 */
export class LocalCopier {
  private readonly workers = new Map<number, { w: import('node:worker_threads').Worker; pending: Map<number, (r: Reply) => void> }>();
  private nextId = 0;

  constructor(private readonly signal?: AbortSignal) {}

  static lanes(): number {
    return Math.max(1, Math.min(4, availableParallelism()));
  }

  async copy(lane: number, from: string, to: string, expected: { digest: string; size: number }, what: string, onBytes?: (n: number) => void): Promise<void> {
    const r = await this.run(lane, { op: 'copy', from, to }, expected, what, onBytes);
    if (r === undefined) return copyVerified(from, to, expected, what, this.signal, onBytes);
    if (r.error) throw new TarportError(r.error.code as TarportError['code'], r.error.message, { retryable: r.error.retryable });
  }

  async check(lane: number, path: string, expected: { digest: string; size: number }, what: string): Promise<boolean> {
    const r = await this.run(lane, { op: 'check', path }, expected, what);
    if (r === undefined) return checkFile(path, expected, what, this.signal);
    return r.ok === true;
  }

  /** undefined: run it on this thread. */
  private async run(lane: number, job: Job, expected: { digest: string; size: number }, what: string, onBytes?: (n: number) => void): Promise<Reply | undefined> {
    if (lane === 0) return undefined;
    const slot = await this.worker(lane);
    if (!slot) return undefined;
    this.signal?.throwIfAborted();
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      const onAbort = () => {
        slot.pending.delete(id);
        void slot.w.terminate();
        this.workers.delete(lane);
        reject(this.signal!.reason);
      };
      this.signal?.addEventListener('abort', onAbort, { once: true });
      slot.pending.set(id, (r) => {
        if (r.bytes !== undefined) {
          onBytes?.(r.bytes); // progress, not the answer
          return;
        }
        slot.pending.delete(id);
        this.signal?.removeEventListener('abort', onAbort);
        if (slot.pending.size === 0) slot.w.unref();
        resolve(r);
      });
      // a job under way keeps the process alive; an idle worker does not
      slot.w.ref();
      slot.w.postMessage({ id, job, expected, what });
    });
  }

  private async worker(lane: number) {
    const have = this.workers.get(lane);
    if (have) return have;
    const url = new URL('./copyworker.js', import.meta.url);
    if (!(await access(url).then(() => true, () => false))) return undefined;
    const { Worker } = await import('node:worker_threads');
    const w = new Worker(url);
    const slot = { w, pending: new Map<number, (r: Reply) => void>() };
    w.on('message', (r: Reply) => slot.pending.get(r.id)?.(r));
    w.on('error', (e) => {
      for (const done of slot.pending.values()) done({ id: -1, error: { code: 'INTERNAL', message: `copy thread failed: ${e.message}`, retryable: false } });
      slot.pending.clear();
      this.workers.delete(lane);
    });
    w.unref();
    this.workers.set(lane, slot);
    return slot;
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers.values()].map((s) => s.w.terminate()));
    this.workers.clear();
  }
}
