import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { TarportError } from '../errors.js';
import { FORMAT_KEY, OCI_LAYOUT_KEY } from './layout.js';
import { parseWith, serialize } from './records.js';
import type { Store } from './store.js';

/**
 * Version 2 (tarport 0.2): repository identity, sequence-named catalogs with their signatures named
 * by content, publish intents (docs/repo-format.md, "Changes"). Version 1 repositories stay readable.
 */
export const FORMAT_VERSION = 2;

export const REPOSITORY_ID_RE = /^[0-9a-f]{32}$/;

const FormatSchema = z.object({
  format: z.literal('tarport'),
  version: z.number().int().positive(),
  /** The repository's identity: random, written once; consumers key rollback state by it. */
  id: z.string().regex(REPOSITORY_ID_RE).optional(),
});
export type FormatFile = z.infer<typeof FormatSchema>;

export async function readFormat(store: Store, signal?: AbortSignal): Promise<FormatFile | undefined> {
  const bytes = await store.readOptional(FORMAT_KEY, 64 << 10, 'format file', signal);
  if (!bytes) return undefined;
  const f = parseWith(FormatSchema, bytes, `format file ${FORMAT_KEY} of ${store.location}`);
  if (f.version > FORMAT_VERSION) {
    throw new TarportError('INTEGRITY', `${store.location} is a tarport repository of format version ${f.version}; this tarport reads up to version ${FORMAT_VERSION}: update tarport`);
  }
  return f;
}

export function newRepositoryId(): string {
  return randomBytes(16).toString('hex');
}

/**
 * The repository's id, created when it has none (a new repository, or one written by tarport 0.1:
 * the migration is "the next writer gives it an id"). `adopt` is the id a sync destination takes
 * over from its source when it has none yet, so that a stick carries its source's identity.
 * Two writers that create an id at once: the later rename wins and both re-read it.
 */
export async function ensureIdentity(store: Store, signal?: AbortSignal, adopt?: string): Promise<string> {
  const have = await readFormat(store, signal);
  if (have?.id && have.version >= FORMAT_VERSION) return have.id;
  const id = have?.id ?? adopt ?? newRepositoryId();
  await store.putAtomic(FORMAT_KEY, serialize({ format: 'tarport', version: FORMAT_VERSION, id }), signal);
  if (!(await store.stat(OCI_LAYOUT_KEY, signal))) {
    await store.putAtomic(OCI_LAYOUT_KEY, Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })), signal);
  }
  const again = await readFormat(store, signal);
  if (!again?.id) throw new TarportError('IO', `${store.location}: ${FORMAT_KEY} was written but reads back without an id`);
  return again.id;
}
