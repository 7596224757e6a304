import { TarportError } from '../errors.js';

/**
 * The most entries a folder listing may have. A repository's largest folder is blobs/sha256, one
 * entry per object: a million objects is far beyond any repository; a listing without end (a lying
 * server) stops here, refused as INTEGRITY, before it takes the agent's memory.
 */
export const MAX_FOLDER_ENTRIES = 1_000_000;

/** Checks that a key is a clean relative path; returns its segments. */
export function keySegments(key: string): string[] {
  const segs = key.split('/');
  if (key === '' || segs.some((s) => s === '' || s === '.' || s === '..' || s.includes('\\') || s.includes('\0'))) {
    throw new TarportError('INTERNAL', `internal error: invalid transport key ${JSON.stringify(key)}`);
  }
  return segs;
}

/** The folder part of a key ('' for the root). */
export function parentOf(key: string): string {
  const i = key.lastIndexOf('/');
  return i < 0 ? '' : key.slice(0, i);
}
