import { constants as fsc } from 'node:fs';
import { lstat, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { makeFolders } from '../folders.js';
import { TarportError, wrapSystemError, wrapWriteError } from '../errors.js';
import { givingBack } from '../lending.js';
import { keySegments, parentOf } from './keys.js';
import { readFileInto, readableFrom } from './source.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from './types.js';

const CHUNK = 1 << 20; // 1 MiB reads: the default 64 KiB halves hashing speed downstream (LIMITS.md)

/**
 * The rename FileTransport calls: a test stands in for a file system this machine does not mount
 * (fusefat on libfuse 3, whose rename does not replace) by swapping it.
 */
export const fileSystem = { rename };

/** A local directory or a mounted stick (file:// URLs and plain paths). */
export class FileTransport implements Transport {
  readonly location: string;
  /**
   * False once a rename over a file was refused with EEXIST, as fusefat built on libfuse 3 (Debian
   * 13) does: renames then remove their target first, as a delete-then-rename server's do, and the
   * repository protocol takes the care it takes there (docs/repo-format.md, "Renames").
   */
  private renameReplaces = true;

  get capabilities() {
    return { atomicRename: this.renameReplaces, maxConnections: 4, local: true };
  }

  constructor(readonly root: string) {
    this.location = `file://${root}`;
  }

  /** Holds taken (hold) and not yet released; the root's identity while there are any. */
  private holds = 0;
  private place: { dev: number; ino: number } | undefined;
  /** Files the holders keep in the root while they write (witness). */
  private readonly witnesses = new Set<() => string>();
  /**
   * Paths this transport is replacing in two steps (renameOver), each with the file that takes its
   * place: a witness absent for that moment is there as that file, which must then be there itself.
   */
  private readonly replacing = new Map<string, string>();

  /**
   * From now until the release, a write or rename fails if the root is gone or is another folder
   * than it was (by device and inode): a stick unplugged or unmounted mid-write leaves its empty
   * mount point, on the host's own disk, and what followed was written there, reported done. A
   * root that did not exist yet (a repository being created) is held from when it is made.
   */
  async hold(): Promise<() => void> {
    if (this.holds++ === 0) this.place = await this.rootIdentity().catch(() => undefined);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.holds === 0) this.place = undefined;
    };
  }

  /** While held: the root is still the folder held (or, for one being created, now held). */
  private async samePlace(what: string, witnesses = true): Promise<void> {
    if (this.holds === 0) return;
    const now = await this.rootIdentity();
    if (!this.place) {
      this.place = now;
      return;
    }
    if (now?.dev === this.place.dev && now.ino === this.place.ino) return witnesses ? this.witnessed(what) : undefined;
    throw new TarportError(
      'IO',
      `${what} in ${this.location}: the repository folder ${now ? 'is another folder than' : 'is gone since'} when this write began (a stick unplugged, unmounted or swapped?); nothing more is written there: run again once it is back`,
      { retryable: false },
    );
  }

  /**
   * Within a hold: `key` (a file the holder wrote, and keeps while it writes: its publish intent)
   * must be there at every later write and rename. The folder's device and inode do not tell two
   * sticks apart when one takes the other's place at the same mount point: the root of every FAT
   * file system is inode 1, and a stick in the same slot gets the same device number. Returns the
   * release.
   */
  witness(key: () => string): () => void {
    const w = () => key(); // an entry of its own, should one getter be passed twice
    this.witnesses.add(w);
    return () => void this.witnesses.delete(w);
  }

  private async witnessed(what: string): Promise<void> {
    for (const key of this.witnesses) {
      const k = key();
      const st = await lstat(this.path(k)).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
        throw wrapSystemError(e, `stat ${k} in ${this.location}`);
      });
      // released meanwhile (another transaction of this transport ended, and then removed it)
      if (st || !this.witnesses.has(key) || (await this.beingReplaced(this.path(k)))) continue;
      throw new TarportError(
        'IO',
        `${what} in ${this.location}: the repository folder no longer holds ${k}, which this write put there when it began (another stick mounted in its place?); nothing more is written there: run again once the stick is back`,
        { retryable: false },
      );
    }
  }

  /** Whether `p`, absent, is being replaced by this transport (renameOver): its replacement is there, or by now `p` again. */
  private async beingReplaced(p: string): Promise<boolean> {
    const by = this.replacing.get(p);
    if (by === undefined) return false;
    const there = async (f: string) => (await lstat(f).catch(() => undefined)) !== undefined;
    return (await there(by)) || (await there(p));
  }

  private async rootIdentity(): Promise<{ dev: number; ino: number } | undefined> {
    try {
      const st = await stat(this.root);
      return { dev: st.dev, ino: st.ino };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw wrapSystemError(e, `stat the folder of ${this.location}`);
    }
  }

  /** The folder of `key`, made if missing, on the root held. */
  private async makeFolderOf(key: string, what: string): Promise<string | undefined> {
    await this.samePlace(what);
    let made: string | undefined;
    try {
      made = await makeFolders(this.folderPath(key));
    } catch (e) {
      throw await wrapWriteError(e, `create folder for ${key} in ${this.location}`, this.folderPath(key));
    }
    // a root this made is held from now on; the witnesses were just looked at (a FUSE round trip each)
    await this.samePlace(what, false);
    return made;
  }

  private path(key: string): string {
    return join(this.root, ...keySegments(key));
  }

  /**
   * Refuses a key whose path, below the root, passes a symbolic link or ends at anything but a
   * file or folder (a FIFO would block a reader forever; a device or socket is no repository file).
   * A repository is plain files: a link in it can only lead out of it, and gc must never delete,
   * nor sync write, outside the repository. The root itself may be a link (a mount point, a stick).
   * Nothing of what lies behind the link is read or printed.
   */
  private async checked(key: string, op: string): Promise<string> {
    const segs = keySegments(key);
    let cur = this.root;
    for (let i = 0; i < segs.length; i++) {
      cur = join(cur, segs[i]!);
      let st;
      try {
        st = await lstat(cur);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return this.path(key);
        throw wrapSystemError(e, `${op} ${key} in ${this.location}`);
      }
      const at = segs.slice(0, i + 1).join('/');
      if (st.isSymbolicLink()) throw new TarportError('INTEGRITY', `${op} ${key} in ${this.location}: ${at} is a symbolic link; a repository holds plain files only, and tarport does not follow links out of it`, { retryable: false });
      if (i < segs.length - 1 ? !st.isDirectory() : !st.isFile() && !st.isDirectory()) {
        throw new TarportError('INTEGRITY', `${op} ${key} in ${this.location}: ${at} is ${kindOf(st)}, not a plain ${i < segs.length - 1 ? 'folder' : 'file'}; refusing`, { retryable: false });
      }
    }
    return this.path(key);
  }

  /**
   * The file of `key` on this host, for a copy between two local stores that runs without a stream
   * (sync): checked as every other operation is (no link, no FIFO on the way), and for 'write' with
   * its folders made and checked again. The caller opens it without following a link.
   */
  async localPath(key: string, op: 'read' | 'write'): Promise<string> {
    const p = await this.checked(key, op);
    if (op === 'read') return p;
    await this.makeFolderOf(key, `write ${key}`);
    return this.checked(key, op); // the folders just made, or found
  }

  private folderPath(key: string): string {
    const parent = parentOf(key);
    return parent === '' ? this.root : this.path(parent);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const p = await this.checked(key, 'stat');
    try {
      const st = await stat(p);
      return { name: key.slice(key.lastIndexOf('/') + 1), isDir: st.isDirectory(), size: st.size, mtime: st.mtime };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw wrapSystemError(e, `stat ${key} in ${this.location}`);
    }
  }

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    const dir = folder === '' ? this.root : await this.checked(folder, 'list');
    let names: import('node:fs').Dirent[];
    try {
      names = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw wrapSystemError(e, `list ${folder || '/'} in ${this.location}`);
    }
    for (const d of names) {
      if (d.isDirectory()) {
        yield { name: d.name, isDir: true, size: 0 };
      } else if (d.isFile()) {
        const st = await lstat(join(dir, d.name)).catch(() => undefined);
        if (st) yield { name: d.name, isDir: false, size: st.size, mtime: st.mtime };
      }
    }
  }

  async read(key: string, opts: ReadOptions = {}): Promise<Readable> {
    const p = await this.checked(key, 'read');
    // no link followed, and a FIFO put in place since the check does not block the open
    const fh = await open(p, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK).catch((e: unknown) => {
      throw wrapSystemError(e, `read ${key} from ${this.location}`);
    });
    if (!(await fh.stat()).isFile()) {
      await fh.close();
      throw new TarportError('INTEGRITY', `read ${key} from ${this.location}: not a plain file; refusing`, { retryable: false });
    }
    return fh.createReadStream({ start: opts.offset ?? 0, highWaterMark: CHUNK, signal: opts.signal, autoClose: true });
  }

  async readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    return readFileInto(await this.checked(key, 'read'), opts.offset ?? 0, sink, opts.signal, `read ${key} from ${this.location}`);
  }

  async write(key: string, source: Source, opts: WriteOptions = {}): Promise<{ size: number }> {
    const p = await this.checked(key, 'write');
    await this.makeFolderOf(key, `write ${key}`);
    await this.checked(key, 'write'); // the folders just made, or found
    const fh = await open(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o666).catch((e: unknown) => {
      throw wrapSystemError(e, `write ${key} to ${this.location}`);
    });
    // the file is the last holder of each chunk: lent buffers go back for reuse once written (lending.ts)
    const out = givingBack(new HandleWriter(fh));
    try {
      await pipeline(readableFrom(source, 0, `write ${key} to ${this.location}`), out, { signal: opts.signal });
      // Durable before it can be renamed into place: a stick pulled right after a publish must not
      // hold a catalog that names objects whose bytes never reached the medium.
      await fh.sync();
      await fh.close();
    } catch (e) {
      await fh.close().catch(() => undefined);
      await rm(p, { force: true }).catch(() => undefined);
      if (e instanceof TarportError) throw e;
      throw await wrapWriteError(e, `write ${key} to ${this.location}`, dirname(p));
    }
    return { size: out.bytesWritten };
  }

  /**
   * The rename, then the folders it changed made durable: a file's bytes are synced before it is
   * renamed (write), but the name it gets lives in its folder, which a stick (vfat) keeps in the
   * buffer cache until write-back. Without this a stick pulled right after "done" could lose the
   * last names, the catalog's among them; folders made for it are synced with their parents.
   */
  async rename(from: string, to: string): Promise<void> {
    try {
      const [a, b] = [await this.checked(from, 'rename'), await this.checked(to, 'rename')];
      const folder = this.folderPath(to);
      const made = await this.makeFolderOf(to, `rename ${from} to ${to}`);
      await this.checked(to, 'rename');
      await this.renameOver(a, b);
      for (const d of foldersChanged(folder, made)) await syncFolder(d);
    } catch (e) {
      throw wrapSystemError(e, `rename ${from} to ${to} in ${this.location}`);
    }
  }

  /** rename(2), replacing a file at `b`: in one step where the file system can, else in two (renameReplaces). */
  private async renameOver(a: string, b: string): Promise<void> {
    try {
      await fileSystem.rename(a, b);
    } catch (e) {
      // a folder in the way stays an error; only a file is replaced
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !(await lstat(b).catch(() => undefined))?.isFile()) throw e;
      this.renameReplaces = false;
      this.replacing.set(b, a);
      try {
        await rm(b, { force: true });
        await fileSystem.rename(a, b);
      } finally {
        this.replacing.delete(b);
      }
    }
  }

  async remove(key: string): Promise<void> {
    const p = await this.checked(key, 'remove');
    try {
      await rm(p, { force: true });
    } catch (e) {
      throw wrapSystemError(e, `remove ${key} from ${this.location}`);
    }
  }

  async close(): Promise<void> {}
}

/** The folder a name went into, and when mkdir made folders for it, each of those and the parent of the first. */
function foldersChanged(folder: string, firstMade: string | undefined): string[] {
  const out = [folder];
  if (firstMade === undefined) return out;
  for (let d = folder; d !== dirname(firstMade) && d !== dirname(d); ) out.push((d = dirname(d)));
  return out;
}

/**
 * fsync of a folder. A file system that cannot sync a folder (some FUSE ones answer ENOSYS or
 * EINVAL) writes its entries through anyway, or cannot be made to: that is no failure of the
 * rename. Any other error (EIO) is.
 */
async function syncFolder(d: string): Promise<void> {
  const fh = await open(d, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await fh.sync().catch((e: unknown) => {
      if (!['EINVAL', 'ENOSYS', 'ENOTSUP', 'EOPNOTSUPP'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    });
  } finally {
    await fh.close();
  }
}

/**
 * Writes chunks through a FileHandle and never closes it: its owner closes it once. Not
 * `createWriteStream({ fd })`: a stream that a failed pipeline destroys closes that fd number itself,
 * whatever `autoClose` says, and the owner's close then closed it a second time: by then the number
 * could belong to a file another task had just opened (a lock, an object being copied), which lost
 * it (EBADF) or, worse, had its next bytes land elsewhere.
 */
class HandleWriter extends Writable {
  bytesWritten = 0;

  constructor(private readonly fh: FileHandle) {
    super({ highWaterMark: CHUNK });
  }

  override _write(chunk: Buffer, _e: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.writeAll(chunk).then(() => cb(), cb);
  }

  private async writeAll(chunk: Buffer): Promise<void> {
    for (let off = 0; off < chunk.length; ) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off);
      if (bytesWritten <= 0) throw new TarportError('IO', 'the file took no bytes of a write');
      off += bytesWritten;
      this.bytesWritten += bytesWritten;
    }
  }
}

function kindOf(st: import('node:fs').Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a file';
}
