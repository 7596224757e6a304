import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsc, fstatSync, readFileSync, rmSync, type Stats } from 'node:fs';
import { mkdtemp, open, rm, stat, statfs, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { TarportError, wrapSystemError } from '../errors.js';

/** How `push` names standard input (the archive `-`) in its messages and its document. */
export const STDIN_NAME = 'standard input';

/**
 * Standard input goes quiet for at most this long: `docker save` writes the whole image to a folder
 * of its own before its first byte (~4 s per GiB here), and a writer that hangs longer than this
 * must not hold a cron run for ever.
 */
export const STDIN_IDLE_MS = 10 * 60_000;

export interface Spooled {
  /** The archive as a file: the archive reader indexes it by seeking, as a `docker save -o` file. */
  readonly path: string;
  remove(): Promise<void>;
}

/** Standard input when it is a regular file (`tarport push - < app.tar`): read in place, not copied. */
const STDIN_FILE = '/dev/stdin';

export interface Spooling extends Spooled {
  /** False when standard input is a regular file, read in place: nothing is copied, nothing comes later. */
  readonly copied: boolean;
  /** Resolves once every byte is in the file; rejects with the copy's fault, the file removed. */
  readonly complete: Promise<void>;
  /** The copy's fault, set as soon as it failed: before the file is removed and `complete` rejects. */
  readonly fault: () => Error | undefined;
}

/**
 * Copies standard input (`docker save IMAGE | tarport push -`) into a file of its own under the
 * temporary folder (TMPDIR), for the archive reader, which needs a file: an image archive names its
 * layers only at its end (manifest.json). The file is removed by `remove()`, and at once when the
 * copy fails; a copy cut short leaves nothing behind. Returns at once, so that the archive can be
 * worked on while it comes: `tap` sees every chunk, in order, once it is in the file (a reader of
 * the file may then read it).
 */
export async function startSpool(input: Readable & { isTTY?: boolean; fd?: number }, signal: AbortSignal, opts: SpoolOptions = {}): Promise<Spooling> {
  if (input.isTTY) throw new TarportError('USAGE', `push -: ${STDIN_NAME} is a terminal; pipe an archive into it (docker save IMAGE | tarport push - --to URL)`);
  if (input.fd === 0 && statOf(0)?.isFile()) return { path: STDIN_FILE, copied: false, complete: Promise.resolve(), fault: () => undefined, remove: async () => undefined };
  // a pipe that breaks before the copy's pipeline listens (while its folder and file are made) would
  // end the process with its 'error'; the fault stays on the stream, and the pipeline reports it
  input.on('error', () => undefined);
  const { path, remove } = await spoolFile();
  const copy = async () => {
    const fh = await open(path, 'wx');
    await pipeline(input, idleBound(opts.idleMs ?? STDIN_IDLE_MS), fileSink(fh, opts.tap), { signal });
    await refuseEmpty(path);
  };
  return spooling(path, remove, copy());
}

/** A copy under way into `path`: its fault kept and the folder removed as soon as it fails. */
function spooling(path: string, remove: () => Promise<void>, copy: Promise<void>): Spooling {
  let fault: Error | undefined;
  const complete = copy.catch(async (e: unknown) => {
    fault = e instanceof TarportError ? e : wrapSystemError(e, copyWhat());
    await remove();
    throw fault;
  });
  complete.catch(() => undefined); // the caller awaits it; a failure before that is not unhandled
  return { path, copied: true, complete, fault: () => fault, remove };
}

/**
 * Standard input as `push -` reads it: a pipe is copied by a `cat` of its own (startPipeSpool) when
 * its read end blocks, as a pipe a shell made does; anything else by startSpool. Decided before
 * process.stdin is made: Node makes a pipe non-blocking then (for every holder of its read end),
 * and `cat` would find it empty instead of waiting for the writer.
 */
export async function spoolStdin(signal: AbortSignal, opts: SpoolOptions = {}): Promise<Spooling> {
  if (statOf(0)?.isFIFO() && blocks(0)) {
    const piped = await startPipeSpool('inherit', signal, opts);
    if (piped) return piped;
  }
  return startSpool(process.stdin, signal, opts);
}

export interface SpoolOptions {
  /** How long the input may stay quiet (STDIN_IDLE_MS). */
  idleMs?: number;
  /**
   * Sees every chunk, in order, once it is in the file. Its memory may be reused once the tap
   * returns: a tap keeps a copy of what it keeps.
   */
  tap?: (chunk: Buffer) => void;
}

const copyWhat = () => `copy ${STDIN_NAME} into ${tmpdir()} (TMPDIR: it needs room for the whole archive)`;

/** A folder of its own under TMPDIR for the copy, removed by `remove()`, or at exit if it comes first. */
async function spoolFile(): Promise<{ path: string; remove: () => Promise<void>; atExit: (f: () => void) => void }> {
  const dir = await mkdtemp(join(tmpdir(), 'tarport-stdin-')).catch((e: unknown) => {
    throw wrapSystemError(e, `make a folder for ${STDIN_NAME} in ${tmpdir()} (TMPDIR)`);
  });
  // a second signal or the hard exit (bin/tarport.js) skips every finally: the copy, which may be
  // gigabytes, goes with the process all the same
  let also: (() => void) | undefined;
  const onExit = () => {
    also?.();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  const remove = async () => {
    process.off('exit', onExit);
    await rm(dir, { recursive: true, force: true });
  };
  return { path: join(dir, 'standard-input.tar'), remove, atExit: (f) => (also = f) };
}

async function refuseEmpty(path: string): Promise<void> {
  const { size } = await stat(path);
  if (size === 0) throw new TarportError('BAD_INPUT', `${STDIN_NAME}: nothing came (0 bytes), not an archive`);
}

/** Bytes the follower of a pipe's copy reads at a time (startPipeSpool). */
const FOLLOW_CHUNK = 1 << 20;
/** How long the follower waits when it has caught up with the copy: from the first, doubling to the last. */
const FOLLOW_WAIT_MS = [1, 50] as const;
/** Free space under which a failed copy's folder counts as full (a file system keeps a few blocks back). */
const NEARLY_FULL = 1 << 20;
/** How long a `cat` that was killed may take to go (one stuck in the kernel, writing to a hung disk). */
const CAT_GONE_MS = 5_000;

/**
 * Copies a pipe (standard input when it is one: `docker save IMAGE | tarport push -`) into a file of
 * its own with a `cat` child, and shows the file to `tap` as it grows. A pipe holds 64 KiB: read by
 * this thread, which hashes and compresses between its reads, it kept its writer waiting, so that
 * `docker save` streamed at the pace of the busy thread (docs/producer.md, "From a pipe"). `cat`
 * keeps the pipe empty, and this thread reads the file in large reused buffers. `cat` reads the pipe
 * it is given open (`input`: this process's standard input, or a descriptor), which must block: a
 * pipe opened again by its name would wait for a writer that has gone, and is refused to another
 * user. It stays in this process's group: a Ctrl-C or a hang-up stops both. Resolves undefined when
 * `cat` cannot be started: nothing was read, and the caller copies the pipe itself.
 */
export async function startPipeSpool(input: 'inherit' | number, signal: AbortSignal, opts: SpoolOptions = {}): Promise<Spooling | undefined> {
  const { path, remove, atExit } = await spoolFile();
  const out = await open(path, 'wx').catch(async (e: unknown) => {
    await remove();
    throw wrapSystemError(e, copyWhat());
  });
  const child = startCat(input, out.fd);
  // heard before anything else is awaited: these events come on a later tick
  const watched = child ? watchCat(child) : undefined;
  const starting = child ? new Promise<boolean>((resolve) => (child.once('spawn', () => resolve(true)), child.once('error', () => resolve(false)))) : Promise.resolve(false);
  await out.close();
  if (!child || !watched || !(await starting)) {
    await remove();
    return undefined;
  }
  atExit(() => child.kill('SIGKILL'));
  return spooling(path, remove, followCopy(child, watched, path, signal, opts));
}

/** `cat` from `input` into the file `out`; undefined when Node refused to start it at once. */
function startCat(input: 'inherit' | number, out: number): ChildProcess | undefined {
  try {
    return spawn('cat', [], { stdio: [input, out, 'pipe'] });
  } catch {
    return undefined;
  }
}

/** How `cat` ended: its exit code, or the signal that stopped it. */
interface CatEnd {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

interface CatWatch {
  /** How it ended, once it did. */
  ended(): CatEnd | undefined;
  /** Settles once it ended and its last words were read. */
  readonly closed: Promise<void>;
  /** The end of what it said on stderr. */
  said(): string;
}

function watchCat(child: ChildProcess): CatWatch {
  let said = '';
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (said = (said + t).slice(-2000)));
  let ended: CatEnd | undefined;
  // 'close': cat has ended, and its last words are read
  const closed = new Promise<void>((resolve) => child.once('close', (code, sig) => ((ended = { code, signal: sig }), resolve())));
  return { ended: () => ended, closed, said: () => said.trim() };
}

/** Follows `cat`'s copy to its end and checks how it ended; `cat` is gone when this settles. */
async function followCopy(child: ChildProcess, cat: CatWatch, path: string, signal: AbortSignal, opts: SpoolOptions): Promise<void> {
  const reader = await open(path, 'r');
  try {
    await readAlong(reader, () => cat.ended() !== undefined, signal, opts);
    await cat.closed;
    await ownSignalFirst(cat.ended()!, signal);
    await catEnded(cat.ended()!, cat.said(), path);
    await refuseEmpty(path);
  } finally {
    await reader.close();
    if (cat.ended() === undefined) {
      child.kill('SIGKILL');
      await Promise.race([cat.closed, delay(CAT_GONE_MS, undefined, { ref: false })]);
    }
  }
}

/** How long a `cat` stopped by a Ctrl-C (or a SIGTERM to the group) waits for this process's own signal. */
const GROUP_SIGNAL_MS = 500;

/**
 * A Ctrl-C reaches `cat` and this process together: the command's own signal is the fault (its exit
 * code, 130 or 143), not `cat`'s end, when it comes at about the same time.
 */
async function ownSignalFirst(ended: CatEnd, signal: AbortSignal): Promise<void> {
  if (ended.signal !== 'SIGINT' && ended.signal !== 'SIGTERM') return;
  // referenced: with nothing else under way (a push to a folder) the process must not end meanwhile
  if (!signal.aborted) await delay(GROUP_SIGNAL_MS, undefined, { signal }).catch(() => undefined);
  if (signal.aborted) throw aborted(signal);
}

/** Reads the file as `cat` writes it, each chunk to the tap, until `cat` has ended and all is read. */
async function readAlong(reader: FileHandle, ended: () => boolean, signal: AbortSignal, opts: SpoolOptions): Promise<void> {
  const idleMs = opts.idleMs ?? STDIN_IDLE_MS;
  const buf = Buffer.allocUnsafeSlow(FOLLOW_CHUNK);
  let position = 0;
  let grew = Date.now();
  let wait: number = FOLLOW_WAIT_MS[0];
  for (;;) {
    if (signal.aborted) throw aborted(signal);
    // what `cat` wrote before it ended is in the file: a read after that which finds nothing is the end
    const over = ended();
    const { bytesRead } = await reader.read(buf, 0, buf.length, position);
    if (bytesRead > 0) {
      position += bytesRead;
      grew = Date.now();
      wait = FOLLOW_WAIT_MS[0];
      opts.tap?.(buf.subarray(0, bytesRead));
      continue;
    }
    if (over) return;
    if (Date.now() - grew > idleMs) throw quiet(idleMs);
    await delay(wait, undefined, { signal }).catch(() => {
      throw aborted(signal);
    });
    wait = Math.min(wait * 2, FOLLOW_WAIT_MS[1]);
  }
}

/** A `cat` that failed: no space left is said as such (the folder's free space, not cat's words, tells). */
async function catEnded(ended: CatEnd, said: string, path: string): Promise<void> {
  if (ended.code === 0) return;
  const how = ended.signal ? `was stopped by ${ended.signal}` : `failed (exit ${ended.code})`;
  const fs = await statfs(path).catch(() => undefined);
  if (fs && fs.bavail * fs.bsize < NEARLY_FULL) {
    throw new TarportError('IO', `${copyWhat()}: no space left on device; free space, then run again`, { retryable: false });
  }
  throw new TarportError('IO', `${copyWhat()}: cat ${how}${said ? `: ${said}` : ''}`, { retryable: false });
}

/** The command's own reason (SIGTERM, SIGINT), or that the copy was stopped. */
const aborted = (signal: AbortSignal) => (signal.reason instanceof TarportError ? signal.reason : new TarportError('ABORTED', `${copyWhat()}: stopped`, { cause: signal.reason }));

const quiet = (ms: number) => new TarportError('BAD_INPUT', `${STDIN_NAME}: nothing came for ${ms >= 60_000 ? `${ms / 60_000} min` : `${ms / 1000} s`}; the writer of the pipe seems stuck (no archive was published)`);

/**
 * Writes chunks to the file, then shows them to `tap`: what a tap saw is in the file. The chunks
 * that queued up while a write ran go in one write: a pipe gives 64 KiB at a time, and a round trip
 * to the file system per chunk slowed the copy to the pace of the busy main thread.
 */
function fileSink(fh: FileHandle, tap: ((chunk: Buffer) => void) | undefined): Writable {
  let position = 0;
  let tapFault: Error | undefined;
  let closed: Promise<void> | undefined;
  const close = () => (closed ??= fh.close());
  const put = async (chunks: readonly Buffer[]) => {
    const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    await writeAll(fh, all, position);
    position += all.length;
  };
  const sink = new Writable({
    highWaterMark: 4 << 20,
    writev(chunks, cb) {
      const batch = chunks.map((c) => c.chunk as Buffer);
      put(batch).then(() => {
        // the next batch's write starts before this one is tapped: the file system works while the
        // tap (the layer watch's hashing) runs on this thread, and a tap still sees only written bytes
        cb();
        // a tap that failed sees nothing more: it would have missed the rest of its batch
        if (!tap || tapFault) return;
        try {
          for (const c of batch) tap(c);
        } catch (e) {
          tapFault = e instanceof Error ? e : new Error('the copy of standard input: its follower failed', { cause: e });
          sink.destroy(tapFault);
        }
      }, cb);
    },
    final(cb) {
      close().then(() => cb(), cb);
    },
    destroy(err, cb) {
      close().then(() => cb(err), () => cb(err));
    },
  });
  return sink;
}

async function writeAll(fh: FileHandle, chunk: Buffer, position: number): Promise<void> {
  for (let done = 0; done < chunk.length; ) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * What a message about the archive says where it named the file that held standard input (a copy
 * already removed, or /dev/stdin): "standard input". The error keeps its class, code and cause.
 */
export function namedAsStdin<E>(e: E, spooled: Spooled): E {
  if (e instanceof Error && e.message.includes(spooled.path)) e.message = e.message.replaceAll(spooled.path, STDIN_NAME);
  return e;
}

/** Whether reads of `fd` wait for data (no O_NONBLOCK in its open file's flags); false when unknown. */
function blocks(fd: number): boolean {
  try {
    const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
    return flags !== undefined && (parseInt(flags, 8) & fsc.O_NONBLOCK) === 0;
  } catch {
    return false;
  }
}

/** What `fd` is open on; undefined when it is not open. */
function statOf(fd: number): Stats | undefined {
  try {
    return fstatSync(fd);
  } catch {
    return undefined;
  }
}

/** Passes bytes through; fails when none came for `ms` (the writer of the pipe hung). */
function idleBound(ms: number): Transform {
  let timer: NodeJS.Timeout;
  const t = new Transform({
    transform(chunk, _enc, cb) {
      timer.refresh();
      cb(null, chunk);
    },
    flush(cb) {
      clearTimeout(timer);
      cb();
    },
    destroy(err, cb) {
      clearTimeout(timer);
      cb(err);
    },
  });
  timer = setTimeout(() => t.destroy(quiet(ms)), ms);
  return t;
}
