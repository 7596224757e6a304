import { fstatSync, rmSync } from 'node:fs';
import { mkdtemp, open, rm, stat, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
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
export async function startSpool(input: Readable & { isTTY?: boolean; fd?: number }, signal: AbortSignal, opts: { idleMs?: number; tap?: (chunk: Buffer) => void } = {}): Promise<Spooling> {
  if (input.isTTY) throw new TarportError('USAGE', `push -: ${STDIN_NAME} is a terminal; pipe an archive into it (docker save IMAGE | tarport push - --to URL)`);
  if (input.fd === 0 && isRegularFile(0)) return { path: STDIN_FILE, copied: false, complete: Promise.resolve(), fault: () => undefined, remove: async () => undefined };
  // a pipe that breaks before the copy's pipeline listens (while its folder and file are made) would
  // end the process with its 'error'; the fault stays on the stream, and the pipeline reports it
  input.on('error', () => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'tarport-stdin-')).catch((e: unknown) => {
    throw wrapSystemError(e, `make a folder for ${STDIN_NAME} in ${tmpdir()} (TMPDIR)`);
  });
  const path = join(dir, 'standard-input.tar');
  // a second signal or the hard exit (bin/tarport.js) skips every finally: the copy, which may be
  // gigabytes, goes with the process all the same
  const onExit = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', onExit);
  const remove = async () => {
    process.off('exit', onExit);
    await rm(dir, { recursive: true, force: true });
  };
  let fault: Error | undefined;
  const copy = async () => {
    try {
      const fh = await open(path, 'wx');
      await pipeline(input, idleBound(opts.idleMs ?? STDIN_IDLE_MS), fileSink(fh, opts.tap), { signal });
      const { size } = await stat(path);
      if (size === 0) throw new TarportError('BAD_INPUT', `${STDIN_NAME}: nothing came (0 bytes), not an archive`);
    } catch (e) {
      fault = e instanceof TarportError ? e : wrapSystemError(e, `copy ${STDIN_NAME} into ${tmpdir()} (TMPDIR: it needs room for the whole archive)`);
      await remove();
      throw fault;
    }
  };
  const complete = copy();
  complete.catch(() => undefined); // the caller awaits it; a failure before that is not unhandled
  return { path, copied: true, complete, fault: () => fault, remove };
}

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

function isRegularFile(fd: number): boolean {
  try {
    return fstatSync(fd).isFile();
  } catch {
    return false;
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
  timer = setTimeout(() => t.destroy(new TarportError('BAD_INPUT', `${STDIN_NAME}: nothing came for ${ms >= 60_000 ? `${ms / 60_000} min` : `${ms / 1000} s`}; the writer of the pipe seems stuck (no archive was published)`)), ms);
  return t;
}
