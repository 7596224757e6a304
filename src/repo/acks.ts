import * as z from 'zod';
import { DIGEST_RE } from '../crypto/index.js';
import { TarportError, isTarportError, messageOf } from '../errors.js';
import { ACKS_FOLDER } from './layout.js';
import { NAME_RE, TAG_RE } from './names.js';
import { parseWith, serialize } from './records.js';
import type { Store } from './store.js';

/**
 * Acknowledgements (docs/repo-format.md, "Acknowledgements"): a consumer that loaded releases and can
 * write to the repository leaves `tarport/acks/<host id>.json`, what it holds from this repository.
 * Each host writes only its own file, so no two writers race on one key; sync carries the files both
 * ways (on a stick they are the low side's return path). They are informational: nothing trusts them.
 */

/** A host id is a file name on every file system tarport writes to (FAT included). */
export const HOST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Names a person reads (a hostname, a runtime, a platform): printable, no markup, no escapes. */
const label = z.string().max(255).regex(/^[A-Za-z0-9][A-Za-z0-9._:/+@ -]*$/, 'not a plain label');
export const MAX_ACK_BYTES = 1 << 20;
/**
 * The most bytes of acknowledgements read in all: a fleet of thousands of hosts writes a few KiB
 * each; a repository that holds more (forged, or a fleet far beyond that) has the rest named as not
 * read, and the page and `ls` show who read what fitted.
 */
export const MAX_ACKS_TOTAL_BYTES = 64 << 20;
export const ACK_SCHEMA = 'tarport.ack/v1';
/** Acknowledgements read at once (readAcks). */
const ACK_READS_AT_ONCE = 8;

export const AckEntrySchema = z.strictObject({
  name: z.string().max(255).regex(NAME_RE),
  tag: z.string().regex(TAG_RE),
  version: z.number().int().positive(),
  /** The release record's digest (what the catalog names). */
  digest: z.string().regex(DIGEST_RE),
  platform: label,
  runtime: label,
  /** When it was loaded (ISO 8601). */
  loaded: z.string().max(40),
});
export type AckEntry = z.infer<typeof AckEntrySchema>;

export const AckSchema = z.strictObject({
  schema: z.literal(ACK_SCHEMA),
  host: z.string().regex(HOST_ID_RE),
  /** The host's name as it calls itself (informational; the id is what keys the file). */
  hostname: label,
  updated: z.string().max(40),
  releases: z.array(AckEntrySchema).max(100_000),
});
export type Ack = z.infer<typeof AckSchema>;

export function ackKey(host: string): string {
  if (!HOST_ID_RE.test(host)) throw new TarportError('USAGE', `host id ${JSON.stringify(host)}: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  return `${ACKS_FOLDER}/${host}.json`;
}

/** Every acknowledgement the repository holds; a file that does not parse is named in `bad` and left out. */
export async function readAcks(store: Store, signal?: AbortSignal): Promise<{ acks: Ack[]; bad: { file: string; problem: string }[] }> {
  const acks: Ack[] = [];
  const bad: { file: string; problem: string }[] = [];
  const names = (await store.list(ACKS_FOLDER, signal)).map((e) => e.name).filter((n) => n.endsWith('.json') && HOST_ID_RE.test(n.slice(0, -5)));
  // a few at once: every pull that loaded something rewrites the page from all of them, and one
  // after another a fleet's files cost a round trip each
  let next = 0;
  let total = 0;
  const worker = async () => {
    for (let i = next++; i < names.length; i = next++) {
      const key = `${ACKS_FOLDER}/${names[i]!}`;
      if (total > MAX_ACKS_TOTAL_BYTES) {
        bad.push({ file: key, problem: `not read: the acknowledgements read before it hold more than ${MAX_ACKS_TOTAL_BYTES} bytes` });
        continue;
      }
      try {
        const bytes = await store.readOptional(key, MAX_ACK_BYTES, 'acknowledgement', signal);
        if (!bytes) continue;
        total += bytes.length;
        const ack = parseWith(AckSchema, bytes, `acknowledgement ${key}`);
        if (`${ack.host}.json` !== names[i]) throw new TarportError('INTEGRITY', `${key} names host ${ack.host}`);
        acks.push(ack);
      } catch (err) {
        if (signal?.aborted) throw err;
        bad.push({ file: key, problem: messageOf(err) });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(ACK_READS_AT_ONCE, names.length) }, worker));
  bad.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return { acks: acks.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0)), bad };
}

/**
 * Writes this host's acknowledgement: its earlier file, with the entries of `loaded` replacing those of
 * the same name:tag. One small atomic put (temporary name, rename).
 */
export async function writeAck(store: Store, host: { id: string; hostname: string }, loaded: readonly AckEntry[], signal?: AbortSignal): Promise<Ack> {
  const key = ackKey(host.id);
  let earlier: AckEntry[] = [];
  // a file of our own too large to be one is replaced; one that could not be read (a dropped link)
  // is not: rewritten from this run's entries alone, it would forget what this host loaded before
  const bytes = await store.readOptional(key, MAX_ACK_BYTES, 'acknowledgement', signal).catch((e: unknown) => {
    if (isTarportError(e, 'INTEGRITY')) return undefined;
    throw e;
  });
  if (bytes) {
    try {
      earlier = parseWith(AckSchema, bytes, `acknowledgement ${key}`).releases;
    } catch {
      earlier = []; // a broken file of our own is replaced
    }
  }
  const fresh = new Set(loaded.map((e) => `${e.name}:${e.tag}`));
  const releases = [...earlier.filter((e) => !fresh.has(`${e.name}:${e.tag}`)), ...loaded].sort((a, b) => (`${a.name}:${a.tag}` < `${b.name}:${b.tag}` ? -1 : 1));
  const ack = AckSchema.parse({ schema: ACK_SCHEMA, host: host.id, hostname: host.hostname, updated: new Date().toISOString(), releases });
  await store.putAtomic(key, serialize(ack), signal);
  return ack;
}

/** The hosts that hold the release with this record digest, by host id. */
export function hostsHolding(acks: readonly Ack[], name: string, tag: string, digest: string): { host: string; hostname: string; loaded: string; runtime: string; platform: string }[] {
  const out = [];
  for (const a of acks) {
    const e = a.releases.find((r) => r.name === name && r.tag === tag && r.digest === digest);
    if (e) out.push({ host: a.host, hostname: a.hostname, loaded: e.loaded, runtime: e.runtime, platform: e.platform });
  }
  return out;
}
