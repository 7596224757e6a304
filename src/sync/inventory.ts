import * as z from 'zod';
import { TarportError } from '../errors.js';

/**
 * What a site has, for `sync --have`: layers in its daemon (diff IDs), objects in its repository,
 * and the releases it holds (by record digest). Written by `tarport inventory`.
 */
export const InventorySchema = z.strictObject({
  schema: z.literal('tarport.inventory/v1'),
  created: z.string(),
  source: z.string(),
  /** Uncompressed layer digests the site's daemon holds. */
  diffIds: z.array(z.string()).default([]),
  /** Chain IDs of those layers (the daemon can skip a layer only when it has the whole chain). */
  chainIds: z.array(z.string()).default([]),
  /** Object digests a site repository holds. */
  objects: z.array(z.string()).default([]),
  /** Releases the site holds: "name:tag" → record digests. */
  releases: z.record(z.string(), z.array(z.string())).default({}),
});
export type Inventory = z.infer<typeof InventorySchema>;

export function parseInventory(text: string, file: string): Inventory {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new TarportError('BAD_INPUT', `inventory ${file} is not valid JSON (${(e as Error).message})`);
  }
  const r = InventorySchema.safeParse(raw);
  if (!r.success) throw new TarportError('BAD_INPUT', `inventory ${file} is not a tarport inventory (${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')})`);
  return r.data;
}
