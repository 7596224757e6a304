import { mkdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * `mkdir -p`, one level at a time. Not `mkdir(dir, { recursive: true })`: Node 20's spins for ever
 * where a parent refuses every new entry with ENOENT (a path under /proc, as a typo in --state,
 * --to or XDG_CACHE_HOME can give), so an unattended run hung at full CPU with no line said.
 * Resolves once `dir` is a folder, with the first (topmost) folder it made, as the recursive mkdir
 * does, or undefined if it made none; rejects with the system error of the level that failed.
 * `mode` is that of every folder made (before the umask).
 */
export async function makeFolders(dir: string, mode?: number): Promise<string | undefined> {
  const missing: string[] = [];
  let first: string | undefined;
  for (let d = dir; ; d = dirname(d)) {
    try {
      await mkdir(d, mode);
      first = d;
    } catch (e) {
      // the parent is missing too: made first, then this one (each once: no loop)
      if (isMissing(e) && dirname(d) !== d) {
        missing.push(d);
        continue;
      }
      if (!isExists(e)) throw e;
    }
    break;
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d, mode);
      first ??= d;
    } catch (e) {
      if (!isExists(e)) throw e;
    }
  }
  return first;
}

/** makeFolders for code that cannot wait (the single executable's start-up). */
export function makeFoldersSync(dir: string, mode?: number): string | undefined {
  const missing: string[] = [];
  let first: string | undefined;
  for (let d = dir; ; d = dirname(d)) {
    try {
      mkdirSync(d, mode);
      first = d;
    } catch (e) {
      if (isMissing(e) && dirname(d) !== d) {
        missing.push(d);
        continue;
      }
      if (!isExists(e)) throw e;
    }
    break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, mode);
      first ??= d;
    } catch (e) {
      if (!isExists(e)) throw e;
    }
  }
  return first;
}

const isExists = (e: unknown) => (e as NodeJS.ErrnoException).code === 'EEXIST';
const isMissing = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';
