import { createHash } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { NativeLoadError, cacheCopy, defaultCandidates, findBinding, fromExecutable, loadVerified, privateDir, shipped, shippedName, type BindingFound } from '../../../src/archive/zstdnative.js';
import { ROOT, tempDir } from '../../helpers.js';

// src/archive/zstdnative.ts: where zstd-napi's binary comes from, and the checks before one is loaded.
// The real binary is the one `npm ci` compiled (zstd-napi is a dev dependency).
const REAL = join(ROOT, 'node_modules/zstd-napi/build/Release/binding.node');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
type Binding = { DCtx?: unknown; CCtx?: unknown };

let dir: string;
let real: Buffer;
beforeAll(async () => {
  dir = await tempDir('tarport-native-');
  real = readFileSync(REAL);
});

/** A folder of shipped binaries holding `files` (name → bytes). */
function nativeDir(name: string, files: Record<string, Uint8Array>): URL {
  const d = join(dir, name);
  mkdirSync(d);
  for (const [f, b] of Object.entries(files)) writeFileSync(join(d, f), b);
  return pathToFileURL(d + '/');
}

describe('finding a binding', () => {
  it('takes the first candidate that loads and keeps why the earlier ones did not', () => {
    const found: BindingFound = { binding: {}, source: 'shipped', path: '/x' };
    const r = findBinding([() => undefined, () => { throw new NativeLoadError('first: did not load'); }, () => found, () => { throw new Error('never tried'); }]);
    expect(r).toEqual({ found, notLoaded: ['first: did not load'] });
    expect(findBinding([() => undefined])).toEqual({ notLoaded: [] });
  });

  it('outside the single executable looks at an installed zstd-napi, then the shipped file', () => {
    expect(defaultCandidates()).toHaveLength(2);
    // and the executable's asset is not there to be had
    expect(() => fromExecutable([join(dir, 'never')])).toThrow(/carries no zstd-napi binary/);
  });
});

describe('the binary shipped beside the bundle', () => {
  it("loads this platform's file from the folder", () => {
    const f = shipped(nativeDir('good', { [shippedName()]: real }));
    expect(f?.source).toBe('shipped');
    expect(f?.path).toBe(join(dir, 'good', shippedName()));
    expect(typeof (f?.binding as Binding).DCtx).toBe('function');
  });

  it('a file that is not a loadable binary is refused with its path, not a crash', () => {
    const url = nativeDir('garbage', { [shippedName()]: Buffer.from('not an ELF file at all') });
    expect(() => shipped(url)).toThrow(NativeLoadError);
    expect(() => shipped(url)).toThrow(`${join(dir, 'garbage', shippedName())} did not load: `);
  });

  it("a folder without this platform's file says which it has; no folder at all is no binary", () => {
    expect(() => shipped(nativeDir('other', { 'zstd-napi-linux-s390x.node': real }))).toThrow(`no zstd-napi binary for ${process.platform}-${process.arch} in ${join(dir, 'other')}/ (it has zstd-napi-linux-s390x.node)`);
    expect(shipped(pathToFileURL(join(dir, 'absent') + '/'))).toBeUndefined();
  });
});

describe("the single executable's cache copy", () => {
  it('is loaded only when its bytes hash to what the executable carries', () => {
    const p = join(dir, 'verified.node');
    writeFileSync(p, real, { mode: 0o700 });
    // the real binary under a wrong hash: refused by the check, not by dlopen (which would load it)
    expect(() => loadVerified(p, sha256(Buffer.from('something else')))).toThrow(`${p}: sha256 ${sha256(real)} is not the ${sha256(Buffer.from('something else'))} this executable carries: not loaded`);
    expect(typeof (loadVerified(p, sha256(real)) as Binding).CCtx).toBe('function');
  });

  it('is not loaded when another user could have written it, or through a symbolic link', () => {
    const p = join(dir, 'loose.node');
    writeFileSync(p, real);
    chmodSync(p, 0o666);
    expect(() => loadVerified(p, sha256(real))).toThrow(/could have been written by another user \(owner \d+, mode 666\): not loaded/);
    const link = join(dir, 'link.node');
    symlinkSync(p, link);
    expect(() => loadVerified(link, sha256(real))).toThrow(/^ELOOP: /);
  });

  it('is written once into a private folder, named by its sha256, and reused', () => {
    const cache = join(dir, 'cache', 'tarport', 'native');
    const p = cacheCopy(real, sha256(real), [cache]);
    expect(p).toBe(join(cache, `zstd-napi-${sha256(real)}.node`));
    expect(statSync(cache).mode & 0o777).toBe(0o700);
    expect(sha256(readFileSync(p))).toBe(sha256(real));
    const ino = statSync(p).ino;
    expect(cacheCopy(real, sha256(real), [cache])).toBe(p);
    expect(statSync(p).ino).toBe(ino);
  });

  it('a copy whose bytes do not match its name is replaced by a whole new one', () => {
    const cache = join(dir, 'tampered');
    const p = cacheCopy(real, sha256(real), [cache]);
    writeFileSync(p, Buffer.from('replaced by someone'));
    expect(cacheCopy(real, sha256(real), [cache])).toBe(p);
    expect(sha256(readFileSync(p))).toBe(sha256(real));
  });

  it('goes to the next folder where one is not private, and says why when none is', () => {
    const open = join(dir, 'open');
    mkdirSync(open, { mode: 0o777 });
    chmodSync(open, 0o777); // writable by everyone, no sticky bit: another user could swap what is below
    const linked = join(dir, 'linked');
    symlinkSync(dir, linked);
    const theirs = join(dir, 'theirs');
    mkdirSync(theirs, { mode: 0o700 });
    chownSync(theirs, 54_321, 54_321);
    expect(() => privateDir(join(open, 'native'))).toThrow(`${open} is writable by other users`);
    expect(() => privateDir(linked)).toThrow(`${linked} is not a folder (a symbolic link?)`);
    expect(() => privateDir(theirs)).toThrow(`${theirs} belongs to user 54321, not to this user (${process.getuid!()})`);
    const fallback = join(dir, 'fallback');
    expect(cacheCopy(real, sha256(real), [join(open, 'native'), linked, theirs, fallback])).toBe(join(fallback, `zstd-napi-${sha256(real)}.node`));
    expect(() => cacheCopy(real, sha256(real), [join(open, 'native'), theirs])).toThrow(`no private folder for the zstd-napi binary: ${open} is writable by other users; ${theirs} belongs to user 54321`);
  });

  it('a loose folder of this user is made private (0700)', () => {
    const mine = join(dir, 'mine');
    mkdirSync(mine, { mode: 0o755 });
    chmodSync(mine, 0o755);
    privateDir(mine);
    expect(statSync(mine).mode & 0o777).toBe(0o700);
  });
});
