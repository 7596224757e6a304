import { readFile, statfs } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
// One error type for the whole program. `code` says what kind of failure it is; the CLI maps codes to
// exit codes (CLI.md) and `retryable` tells retry wrappers whether trying again can help.

export type ErrorCode =
  | 'USAGE' // bad flags or arguments
  | 'CONFIG' // bad configuration file or value
  | 'BAD_INPUT' // an input archive or file is unusable
  | 'NOT_FOUND' // an object, record or repository is missing
  | 'NO_REPOSITORY' // a write to a location that holds no repository (tarport init creates one)
  | 'IO' // local or remote I/O failed
  | 'CONNECTION' // a server could not be reached or dropped the connection
  | 'DAEMON' // the Docker daemon refused or failed
  | 'LOCKED' // another run holds the lock
  | 'DIGEST_MISMATCH' // bytes do not match the digest that names or describes them
  | 'INTEGRITY' // a record, catalog or object is malformed or inconsistent
  | 'UNTRUSTED' // signature missing, bad, or by a key that is not trusted
  | 'ROLLBACK' // an older catalog or release than one already seen
  | 'EXPIRED' // the catalog's expiry has passed
  | 'PLATFORM' // a release holds no image for the consumer's platform (exit 2)
  | 'ABORTED' // cancelled by a signal
  | 'INTERNAL'; // a bug in tarport

export class TarportError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  /** An input that ends early: maybe still being written (the producer agent waits for more). */
  readonly truncated: boolean;
  /** USAGE: the flag whose value was refused (`--keep`), so that a value from a config file or the environment is told as such. */
  readonly flag: string | undefined;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean; truncated?: boolean; flag?: string } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'TarportError';
    this.code = code;
    this.retryable = opts.retryable ?? (code === 'CONNECTION' || code === 'IO');
    this.truncated = opts.truncated ?? false;
    this.flag = opts.flag;
  }
}

/**
 * Refusals: what the repository holds is wrong or untrusted (exit 3), or holds no image for this
 * host's platform (PLATFORM, exit 2). Trying again cannot help until
 * it changes, so an agent skips such a release until its record changes; every other failure (a
 * daemon or server that is down, a network fault) is transient and tried again.
 */
const REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['DIGEST_MISMATCH', 'INTEGRITY', 'UNTRUSTED', 'ROLLBACK', 'EXPIRED', 'PLATFORM']);

export function isRefusalCode(code: string): boolean {
  return REFUSALS.has(code as ErrorCode);
}

export function isTarportError(e: unknown, code?: ErrorCode): e is TarportError {
  return e instanceof TarportError && (code === undefined || e.code === code);
}

/** The message of any thrown value, for wrapping. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** An error of a system call (fs, net: it names its syscall and errno code), not of the data. */
export function isSystemError(e: unknown): e is NodeJS.ErrnoException {
  return typeof (e as NodeJS.ErrnoException | undefined)?.syscall === 'string' && typeof (e as NodeJS.ErrnoException).code === 'string';
}

/**
 * wrapSystemError for a write into `folder`, where a full file system may answer in other words:
 * fusefat refuses a write to a full FAT stick with EPERM ("operation not permitted") where it is
 * built on libfuse 2 (Debian 12), with EIO ("input/output error") on libfuse 3 (Debian 13); read as
 * "permission denied" or a failing disk, either sent the user the wrong way. A refusal (EPERM,
 * EACCES, EIO) while the file system has less than 1 MiB left is told as the full disk it is; where
 * it reports no size (fusefat), as either.
 */
export async function wrapWriteError(e: unknown, what: string, folder: string): Promise<TarportError> {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (e instanceof TarportError || (code !== 'EPERM' && code !== 'EACCES' && code !== 'EIO')) return wrapSystemError(e, what);
  const free = await freeBytes(folder);
  if (free === 'unknown') {
    // fusefat reports no size at all (0 blocks): the two cannot be told apart, so both are said
    const other = code === 'EIO' ? 'check the stick (a failing one answers so too)' : 'check that the user may write there';
    return new TarportError('IO', `${what}: the file system refused the write (${code}); it may be full: it answers a full disk so too, and reports no free space to tell; free space, or ${other}, then run again`, { cause: e, retryable: false });
  }
  if (free < FULL_BELOW) return new TarportError('IO', `${what}: no space left on device (the file system answered "${messageOf(e)}"); free space, then run again`, { cause: e, retryable: false });
  return wrapSystemError(e, what);
}

const FULL_BELOW = 1 << 20;

/**
 * Bytes free for this user; 'unknown' where the file system reports no size (fusefat: 0 blocks), or
 * is a FUSE file system, which is not asked: fusefat on libfuse 3 (Debian 13) never answers a
 * statfs on a full stick, and a call the kernel waits on cannot be given up (the process could not
 * even exit).
 */
async function freeBytes(folder: string): Promise<number | 'unknown'> {
  if (await onFuse(folder)) return 'unknown';
  // the folder a write would have made may not be there: its nearest parent is on the same disk
  for (let d = folder; ; d = dirname(d)) {
    try {
      const st = await statfs(d);
      return st.blocks === 0 ? 'unknown' : st.bavail * st.bsize;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(d) === d) return Infinity; // not asked: the error is told as it came
    }
  }
}

/** Whether `path` lies on a FUSE mount, by this process's mount table (no call to the file system itself). */
async function onFuse(path: string): Promise<boolean> {
  return fuseIn(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''), path);
}

/** Whether the mount `path` lies on is a FUSE one (fuse.*, fuseblk), by a mount table (/proc/self/mountinfo). */
export function fuseIn(mountinfo: string, path: string): boolean {
  const at = resolve(path);
  let best = { point: '', fuse: false };
  for (const line of mountinfo.split('\n')) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (f.length < 5 || dash < 0) continue;
    const point = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const inside = point === '/' || at === point || at.startsWith(`${point}/`);
    if (inside && point.length >= best.point.length) best = { point, fuse: /^fuse(\.|blk$|$)/.test(f[dash + 1] ?? '') };
  }
  return best.fuse;
}

/** Wraps a Node system error (ENOENT, ENOSPC, …) with what we were doing. */
export function wrapSystemError(e: unknown, what: string): TarportError {
  if (e instanceof TarportError) return e;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const detail = messageOf(e);
  switch (code) {
    case 'ENOENT':
      return new TarportError('NOT_FOUND', `${what}: not found`, { cause: e });
    case 'ENOSPC':
      return new TarportError('IO', `${what}: no space left on device; free space, then run again`, { cause: e, retryable: false });
    case 'EACCES':
    case 'EPERM':
      return new TarportError('IO', `${what}: permission denied`, { cause: e, retryable: false });
    case 'EROFS':
      return new TarportError('IO', `${what}: read-only file system`, { cause: e, retryable: false });
    case 'EFBIG':
      // FAT32 takes no file of 4 GiB; a stick formatted so needs the objects in parts
      return new TarportError('IO', `${what}: the file system takes no file this large (FAT32: at most 4 GiB - 1 byte); for a stick, sync with --max-file-size fat32`, { cause: e, retryable: false });
    case 'ENAMETOOLONG':
      return new TarportError('IO', `${what}: a name too long for the file system (255 characters a folder or file)`, { cause: e, retryable: false });
    case 'ABORT_ERR':
      return new TarportError('ABORTED', `${what}: aborted`, { cause: e });
    default:
      return new TarportError('IO', `${what}: ${detail}`, { cause: e });
  }
}
