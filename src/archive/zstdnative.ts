// Where zstd-napi's compiled binding comes from (docs/install.md, "zstd"). zstd-napi is the codec
// that meets issue 19's speed rule (compression >= 0.8 x `zstd -3`, decompression >= 0.8 x the CLI);
// Node's own zlib zstd does not. Its npm package downloads or compiles its binary at install time,
// which an offline host without a compiler cannot do, so tarport's build carries the binary itself
// (scripts/build-native): beside the bundle in the npm package, as an asset inside the single
// executable. It is a Node-API addon, so one file per OS and architecture serves every Node.
// A binary that does not load (another libc, a missing file, bytes that are not what was shipped)
// is never fatal: the reason is kept for `tarport version` and the codec falls back to Node's zlib.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants as fsc, existsSync, fstatSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync, chmodSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, parse } from 'node:path';
import { getAsset, isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';
import { makeFoldersSync } from '../folders.js';

/** Where a loaded binding came from: zstd-napi installed beside tarport, the file tarport's package carries, or the single executable's asset. */
export type BindingSource = 'installed' | 'shipped' | 'executable';

export interface BindingFound {
  binding: unknown;
  source: BindingSource;
  /** The file that was loaded (for the executable: its private cache copy). */
  path: string;
}

/** What looking for a binding found: the one that loaded, and why others did not. */
export interface BindingSearch {
  found?: BindingFound;
  /** One line per binary that is there but did not load (or a build that lacks this platform's). */
  notLoaded: string[];
}

/** A place a binding may come from: undefined when it has none, a throw when it has one that does not load. */
export type Candidate = () => BindingFound | undefined;

/** A binary that is there and was refused or failed to load. */
export class NativeLoadError extends Error {
  override name = 'NativeLoadError';
}

/** The single executable's asset name (scripts/build-sea embeds the file for its architecture). */
export const SEA_ASSET = 'zstd-napi.node';

/** The candidates in order, the first that loads wins. */
export function findBinding(candidates: readonly Candidate[]): BindingSearch {
  const notLoaded: string[] = [];
  for (const c of candidates) {
    try {
      const found = c();
      if (found) return { found, notLoaded };
    } catch (e) {
      notLoaded.push(firstLine(e));
    }
  }
  return { notLoaded };
}

/**
 * Where this process looks: inside the single executable only at what the file carries (nothing on
 * the host is loaded implicitly); elsewhere an installed zstd-napi first (a user who installed it
 * chose it), then the binary shipped beside the bundle.
 */
export function defaultCandidates(): Candidate[] {
  if (isSea()) return [() => fromExecutable(cacheDirs())];
  return [installed, () => shipped()];
}

/** zstd-napi installed beside tarport (node_modules): undefined when it is not installed. */
export function installed(): BindingFound | undefined {
  const req = createRequire(import.meta.url);
  let path: string;
  try {
    path = req.resolve('zstd-napi/binding.js');
  } catch {
    return undefined;
  }
  try {
    return { binding: req(path), source: 'installed', path };
  } catch (e) {
    throw new NativeLoadError(`zstd-napi installed at ${dirname(path)}: its binary did not load: ${firstLine(e)}`);
  }
}

/** The file name of the binary for this OS and architecture, as scripts/build-native writes it. */
export function shippedName(platform: string = process.platform, arch: string = process.arch): string {
  return `zstd-napi-${platform}-${arch}.node`;
}

/**
 * The binary tarport's build put in `native/` beside the bundle (dist/bundle/native/). Undefined in
 * a tree without that folder (development: zstd-napi is installed there); a folder that lacks this
 * platform's file says so.
 */
export function shipped(dir: URL = new URL('./native/', import.meta.url)): BindingFound | undefined {
  const folder = fileURLToPath(dir);
  if (!existsSync(folder)) return undefined;
  const path = join(folder, shippedName());
  if (!existsSync(path)) {
    const have = readdirSync(folder).filter((f) => f.endsWith('.node'));
    throw new NativeLoadError(`no zstd-napi binary for ${process.platform}-${process.arch} in ${folder} (it has ${have.join(', ') || 'none'})`);
  }
  return { binding: dlopen(path, path), source: 'shipped', path };
}

/**
 * The single executable's binary: written once to a private cache file named by its sha256 (the
 * standard SEA recipe: an addon is loaded from a file), checked against that hash, then loaded.
 */
export function fromExecutable(dirs: readonly string[]): BindingFound | undefined {
  let asset: ArrayBuffer;
  try {
    asset = getAsset(SEA_ASSET);
  } catch {
    throw new NativeLoadError(`this executable carries no zstd-napi binary for ${process.platform}-${process.arch}`);
  }
  const bytes = new Uint8Array(asset);
  const sha256 = sha256Hex(bytes);
  const path = cacheCopy(bytes, sha256, dirs);
  return { binding: loadVerified(path, sha256), source: 'executable', path };
}

let cacheBase: string | undefined;

/** The user's cache folder ($XDG_CACHE_HOME, which cli/ reads); ~/.cache when unset. */
export function setNativeCacheBase(dir: string | undefined): void {
  cacheBase = dir || undefined;
}

/** Folders for the executable's cache copy, in order: the user's cache, then the temp folder. */
export function cacheDirs(): string[] {
  const uid = process.getuid?.() ?? 0;
  return [join(cacheBase ?? join(homedir(), '.cache'), 'tarport', 'native'), join(tmpdir(), `tarport-native-${uid}`)];
}

/** The first folder of `dirs` that is (or can be made) private holds a verified copy of `bytes`; its path. */
export function cacheCopy(bytes: Uint8Array, sha256: string, dirs: readonly string[]): string {
  const reasons: string[] = [];
  for (const dir of dirs) {
    try {
      privateDir(dir);
      return writeOnce(dir, bytes, sha256);
    } catch (e) {
      reasons.push(firstLine(e));
    }
  }
  throw new NativeLoadError(`no private folder for the zstd-napi binary: ${reasons.join('; ')}`);
}

/**
 * Makes `dir` (mode 0700, owned by this user) and checks that no other user can replace what is in
 * it: the folder itself, and every folder above it, is owned by this user or root and writable by
 * no one else (a world-writable folder only with the sticky bit, as /tmp has).
 */
export function privateDir(dir: string): void {
  const uid = process.getuid?.() ?? 0;
  makeFoldersSync(dir, 0o700);
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new NativeLoadError(`${dir} is not a folder (a symbolic link?)`);
  if (st.uid !== uid) throw new NativeLoadError(`${dir} belongs to user ${st.uid}, not to this user (${uid})`);
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
  for (let p = dirname(dir); ; p = dirname(p)) {
    const a = lstatSync(p);
    if (a.isSymbolicLink()) {
      // a link above (e.g. /home -> /usr/home): only root or this user may have placed it
      if (a.uid !== uid && a.uid !== 0) throw new NativeLoadError(`${p} is a symbolic link of user ${a.uid}`);
    } else {
      if (a.uid !== uid && a.uid !== 0) throw new NativeLoadError(`${p} belongs to user ${a.uid}`);
      if ((a.mode & 0o022) !== 0 && (a.mode & 0o1000) === 0) throw new NativeLoadError(`${p} is writable by other users`);
    }
    if (p === parse(p).root) break;
  }
}

/**
 * `dir/zstd-napi-<sha256>.node`, written when it is not there whole: into a new file of its own
 * (O_EXCL, never through a link), then renamed over the name, so a reader sees an earlier complete
 * copy or the new one. A copy whose bytes do not match its name is replaced.
 */
function writeOnce(dir: string, bytes: Uint8Array, sha256: string): string {
  const path = join(dir, `zstd-napi-${sha256}.node`);
  if (hashOf(path) === sha256) return path;
  const tmp = join(dir, `.zstd-napi-${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o700);
  try {
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  return path;
}

/** The sha256 of a regular file (never through a link), or undefined when there is none. */
function hashOf(path: string): string | undefined {
  try {
    const fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      return fstatSync(fd).isFile() ? sha256Hex(readFileSync(fd)) : undefined;
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

/**
 * Loads the file at `path` only if its bytes hash to `sha256` and no other user could have written
 * them: it is opened once (not through a link), checked, hashed, and the open file itself is what
 * is loaded (/proc/self/fd/N), so nothing can swap it between the check and the load.
 */
export function loadVerified(path: string, sha256: string): unknown {
  const uid = process.getuid?.() ?? 0;
  const fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new NativeLoadError(`${path} is not a regular file: not loaded`);
    if (st.uid !== uid || (st.mode & 0o022) !== 0) throw new NativeLoadError(`${path} could have been written by another user (owner ${st.uid}, mode ${(st.mode & 0o777).toString(8)}): not loaded`);
    const actual = sha256Hex(readFileSync(fd));
    if (actual !== sha256) throw new NativeLoadError(`${path}: sha256 ${actual} is not the ${sha256} this executable carries: not loaded`);
    const byFd = `/proc/self/fd/${fd}`;
    return dlopen(existsSync(byFd) ? byFd : path, path);
  } finally {
    closeSync(fd);
  }
}

/** process.dlopen of an addon; `shown`: the path its failure names. */
function dlopen(file: string, shown: string): unknown {
  const m = { exports: {} as unknown };
  try {
    process.dlopen(m, file);
  } catch (e) {
    throw new NativeLoadError(`${shown} did not load: ${firstLine(e)}`);
  }
  return m.exports;
}

function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}
