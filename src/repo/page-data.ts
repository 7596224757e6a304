import * as z from 'zod';
import { hexOf } from '../crypto/index.js';
import { PAGE_DATA_KEY, parseRecordFileName, recordKey } from './layout.js';
import type { ReleaseRef } from './read.js';
import { parseWith } from './records.js';
import type { Store } from './store.js';

/**
 * tarport/page-data.json (docs/repo-format.md, "The page"): what the page says of each release that
 * does not change, kept so that a rewrite of the page reads only the records that are new since the
 * last one. Without it every publish, and every consumer's acknowledgement, read every record,
 * signature and config in the repository: three requests per release, each a few round trips on
 * FTP. Records are immutable and named after their digest, so an entry stays true while its record
 * exists. Derived and unsigned, like the page: a file that does not parse is rebuilt, never trusted.
 */

export const PAGE_DATA_SCHEMA = 'tarport.page-data/v1';
const MAX_PAGE_DATA_BYTES = 64 << 20;

const text = z.string().max(4096);
export const PageFactsSchema = z.object({
  name: text,
  tag: text,
  version: z.number().int().positive(),
  kind: text,
  size: z.number().int().nonnegative(),
  created: text,
  signer: text.nullable(),
  signerUserId: text.nullable(),
  encrypted: z.boolean(),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  platforms: z.array(text).max(1000),
  layers: z.array(text).max(10_000),
});
/** What the page says of one release that its immutable files decide. */
export type PageFacts = z.infer<typeof PageFactsSchema>;

const PageDataSchema = z.object({ schema: z.literal(PAGE_DATA_SCHEMA), releases: z.record(z.string(), PageFactsSchema) });

/** The facts kept by the last writer, by record key; empty when there are none or they do not parse. */
export async function readPageData(store: Store, signal?: AbortSignal): Promise<Map<string, PageFacts>> {
  try {
    const bytes = await store.readOptional(PAGE_DATA_KEY, MAX_PAGE_DATA_BYTES, 'page data', signal);
    if (!bytes) return new Map();
    return new Map(Object.entries(parseWith(PageDataSchema, bytes, 'page data').releases));
  } catch (e) {
    if (signal?.aborted) throw e;
    return new Map();
  }
}

/** Kept facts of a release, when they are of this very record (its file name carries its digest's start). */
export function keptFacts(kept: ReadonlyMap<string, PageFacts>, ref: ReleaseRef): PageFacts | undefined {
  const f = kept.get(recordKey(ref.name, ref.tag, ref.record));
  const named = parseRecordFileName(ref.record);
  if (!f || !named || f.name !== ref.name || f.tag !== ref.tag) return undefined;
  return hexOf(f.digest).startsWith(named.idPrefix) && f.version === named.version ? f : undefined;
}

export async function writePageData(store: Store, facts: ReadonlyMap<string, PageFacts>, signal?: AbortSignal): Promise<void> {
  const doc = { schema: PAGE_DATA_SCHEMA, releases: Object.fromEntries(facts) };
  await store.putAtomic(PAGE_DATA_KEY, Buffer.from(JSON.stringify(doc), 'utf8'), signal);
}
