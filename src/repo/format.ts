import { randomBytes } from 'node:crypto';
import * as z from 'zod';
import { TarportError } from '../errors.js';
import { CATALOG_KEY, FORMAT_KEY, MAX_CATALOG_BYTES, OCI_LAYOUT_KEY } from './layout.js';
import { CatalogSchema, MEDIA_TYPES, parseWith, serialize, type Catalog } from './records.js';
import type { Store } from './store.js';

/**
 * Version 2 (tarport 0.2): repository identity, sequence-named catalogs with their signatures named
 * by content, publish intents. Version 3: release records of multi-platform images (`index`), which
 * a version-2 reader would refuse as malformed (docs/repo-format.md, "Versioning", "Changes").
 * Version 1 and 2 repositories stay readable. FORMAT_VERSION is the newest this tarport reads.
 */
export const FORMAT_VERSION = 3;
/** What a writer declares until it writes a record that needs more: version-2 readers read the rest. */
export const BASE_FORMAT_VERSION = 2;
/** A repository that holds a multi-platform record declares at least this. */
export const INDEX_FORMAT_VERSION = 3;

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
 * `version`: the format the writer needs (INDEX_FORMAT_VERSION before it writes a multi-platform record).
 * Two writers that create an id at once: the later rename wins and both re-read it.
 */
export async function ensureIdentity(store: Store, signal?: AbortSignal, adopt?: string, version = BASE_FORMAT_VERSION): Promise<string> {
  const have = await readFormat(store, signal);
  if (have?.id && have.version >= version) return have.id;
  // a format file lost (removed by hand, a stick's bad sector) while the catalog still names the
  // repository: its identity and version come back from the catalog, never a new id (consumers
  // key their rollback memory by it) nor a lower version
  const lost = have?.id ? undefined : await identityInCatalog(store, signal);
  const id = have?.id ?? lost?.id ?? adopt ?? newRepositoryId();
  // never lowered: a repository that holds version-3 records stays version 3
  await store.putAtomic(FORMAT_KEY, serialize({ format: 'tarport', version: Math.max(version, have?.version ?? 0, lost?.version ?? 0), id }), signal);
  if (!(await store.stat(OCI_LAYOUT_KEY, signal))) {
    await store.putAtomic(OCI_LAYOUT_KEY, Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })), signal);
  }
  const again = await readFormat(store, signal);
  if (!again?.id) throw new TarportError('IO', `${store.location}: ${FORMAT_KEY} was written but reads back without an id`);
  return again.id;
}

/** The id and format version the catalog shows, when it names a repository (a v2 catalog). */
async function identityInCatalog(store: Store, signal?: AbortSignal): Promise<{ id: string; version: number } | undefined> {
  // a read that fails (a dropped link) fails the write: "no catalog" would mint a new id
  const bytes = await store.readOptional(CATALOG_KEY, MAX_CATALOG_BYTES, 'catalog', signal);
  if (!bytes) return undefined;
  let catalog: Catalog;
  try {
    catalog = parseWith(CatalogSchema, bytes, `catalog ${CATALOG_KEY}`);
  } catch {
    return undefined; // a catalog that does not read tells nothing; repair rebuilds it
  }
  if (!catalog.repository) return undefined;
  const multiPlatform = catalog.releases.some((e) => e.manifest?.mediaType === MEDIA_TYPES.index);
  return { id: catalog.repository, version: multiPlatform ? INDEX_FORMAT_VERSION : BASE_FORMAT_VERSION };
}
