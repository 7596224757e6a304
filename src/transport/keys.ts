import { TarportError } from '../errors.js';

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
