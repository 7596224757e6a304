import { randomBytes } from 'node:crypto';
import * as z from 'zod';
import { blobInfo } from './objects.js';
import { PENDING_FOLDER } from './layout.js';
import { parseWith, serialize } from './records.js';
import type { Store } from './store.js';

// Publish intents and gc notices: how gc and publishes stay out of each other's way on a server
// with no locks (docs/repo-format.md, "Garbage collection and concurrent publishes").

/** How long an intent holds without a refresh; a publish refreshes it every INTENT_REFRESH_MS. */
export const INTENT_TTL_MS = 30 * 60_000;
export const INTENT_REFRESH_MS = 5 * 60_000;
/** How long a gc may delete after announcing what it will delete. */
export const GC_WINDOW_MS = 10 * 60_000;
/** Clocks of producer and gc hosts may differ by this much. */
export const CLOCK_SKEW_MS = 60_000;

const digestList = z.array(z.string().regex(/^sha256:[0-9a-f]{64}$/));
const IntentSchema = z.strictObject({ schema: z.literal('tarport.intent/v1'), created: z.string(), expires: z.string(), objects: digestList });
const GcNoticeSchema = z.strictObject({ schema: z.literal('tarport.gc-notice/v1'), created: z.string(), deadline: z.string(), objects: digestList });

const INTENT_RE = /^intent-[0-9a-f]{16}\.json$/;
const NOTICE_RE = /^gc-[0-9a-f]{16}\.json$/;

/** A pause that an abort ends; its listener goes with it (a wait of many steps adds none up). */
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => (clearTimeout(t), reject(signal!.reason));
    const t = setTimeout(() => (signal?.removeEventListener('abort', onAbort), resolve()), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/**
 * A publish's announcement of the objects it is about to reference. Written before the publish
 * looks at which objects the repository holds; gc spares every object a live intent names.
 */
export class PublishIntent {
  private readonly objects = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  /** The file that holds the intent now. */
  private key = newIntentKey();

  /** The file that holds the intent now (it moves only where a rename does not replace in one step). */
  get file(): string {
    return this.key;
  }
  /** Writes one after another: a refresh never races a protect's write. */
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly store: Store,
    private readonly onWait?: (message: string) => void,
  ) {}

  static async open(store: Store, signal?: AbortSignal, onWait?: (message: string) => void): Promise<PublishIntent> {
    const intent = new PublishIntent(store, onWait);
    await intent.write(signal);
    intent.timer = setInterval(() => void intent.write().catch(() => undefined), INTENT_REFRESH_MS);
    intent.timer.unref();
    return intent;
  }

  private write(signal?: AbortSignal): Promise<void> {
    const next = this.writing.then(() => this.writeNow(signal));
    this.writing = next.catch(() => undefined);
    return next;
  }

  private async writeNow(signal?: AbortSignal): Promise<void> {
    const now = Date.now();
    const body = serialize({ schema: 'tarport.intent/v1', created: new Date(now).toISOString(), expires: new Date(now + INTENT_TTL_MS).toISOString(), objects: [...this.objects].sort() });
    if (this.store.replacesAtomically) return this.store.putAtomic(this.key, body, signal);
    // where a rename over a file deletes it first (SFTP without posix-rename, some FTP servers) a
    // gc listing in that moment would find no intent and delete what this publish counts on: a
    // new file first, then the old one removed, so one is always there
    const key = newIntentKey();
    await this.store.putAtomic(key, body, signal);
    const old = this.key;
    this.key = key;
    await this.store.remove(old).catch(() => undefined); // a leftover expires with its TTL
  }

  /**
   * Adds objects to the intent, then waits out any gc that announced it would delete one of them,
   * then looks them up: returns those the repository does not hold (any more). Only after this may
   * a publish count on an object it did not write itself.
   */
  async protect(digests: Iterable<string>, signal?: AbortSignal): Promise<Set<string>> {
    const added = [...digests].filter((d) => !this.objects.has(d));
    for (const d of added) this.objects.add(d);
    if (added.length > 0) await this.write(signal);
    await waitForGc(this.store, new Set(added), signal, this.onWait);
    const missing = new Set<string>();
    for (const d of added) if (!(await blobInfo(this.store, d, signal))) missing.add(d);
    return missing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.writing;
    await this.store.remove(this.key).catch(() => undefined);
  }
}

const newIntentKey = () => `${PENDING_FOLDER}/intent-${randomBytes(8).toString('hex')}.json`;

interface Pending {
  readonly key: string;
  readonly objects: readonly string[];
  /** Until when it holds (intent: expires; gc notice: deadline), by its writer's clock. */
  readonly until: number;
}

/** Every intent or gc notice in tarport/pending/ (an unreadable one is reported through `bad`). */
export async function listPending(store: Store, kind: 'intent' | 'gc', signal?: AbortSignal, bad?: (key: string, why: string) => void): Promise<Pending[]> {
  // a file gone between the listing and its read may be an intent rewritten under a new name (its
  // writer made the new one first): the folder is listed again, a few times at most, so that a gc
  // never takes "rewritten" for "ended"
  for (let round = 1; ; round++) {
    const { found, gone } = await readPending(store, kind, signal, bad);
    if (gone === 0 || round === PENDING_ROUNDS) return found;
  }
}

const PENDING_ROUNDS = 5;

async function readPending(store: Store, kind: 'intent' | 'gc', signal: AbortSignal | undefined, bad: ((key: string, why: string) => void) | undefined): Promise<{ found: Pending[]; gone: number }> {
  const out: Pending[] = [];
  let gone = 0;
  for (const e of await store.list(PENDING_FOLDER, signal)) {
    if (e.isDir || !(kind === 'intent' ? INTENT_RE : NOTICE_RE).test(e.name)) continue;
    const key = `${PENDING_FOLDER}/${e.name}`;
    try {
      const bytes = await store.readOptional(key, 16 << 20, kind, signal);
      if (!bytes) {
        gone++; // ended between list and read, or rewritten under a new name
        continue;
      }
      if (kind === 'intent') {
        const i = parseWith(IntentSchema, bytes, `intent ${key}`);
        out.push({ key, objects: i.objects, until: Date.parse(i.expires) });
      } else {
        const n = parseWith(GcNoticeSchema, bytes, `gc notice ${key}`);
        out.push({ key, objects: n.objects, until: Date.parse(n.deadline) });
      }
    } catch (e) {
      if (signal?.aborted) throw e;
      bad?.(key, (e as Error).message);
    }
  }
  return { found: out, gone };
}

/** True while an intent or notice still holds by this host's clock, allowing for skew. */
export const holds = (p: Pending, now = Date.now()) => now < p.until + CLOCK_SKEW_MS;

/**
 * Waits until no gc that announced one of `objects` runs: bounded by the notices' deadlines, and by
 * this host's clock. A gc deletes only within GC_WINDOW_MS of its notice, which was written before
 * we first saw it; a deadline further off (the gc host's clock hours ahead, a notice killed gc left
 * behind, a hostile one for year 9999) would otherwise hold every publish that long.
 */
async function waitForGc(store: Store, objects: ReadonlySet<string>, signal?: AbortSignal, onWait?: (message: string) => void): Promise<void> {
  if (objects.size === 0) return;
  const latest = Date.now() + GC_WINDOW_MS + 2 * CLOCK_SKEW_MS;
  let said = false;
  for (;;) {
    const notices = (await listPending(store, 'gc', signal)).filter((n) => holds(n) && n.objects.some((o) => objects.has(o)));
    if (notices.length === 0) return;
    const until = Math.min(latest, Math.max(...notices.map((n) => n.until + CLOCK_SKEW_MS)));
    if (Date.now() >= until) return;
    // a wait of minutes is said once, naming what it waits for: not a hang with no line
    if (!said) onWait?.(`waiting for ${notices.map((n) => n.key).join(', ')} in ${store.location}: a gc announced it may delete objects this publish reuses; waiting until ${new Date(until).toISOString()} at the latest (docs/repo-format.md, "Garbage collection and concurrent publishes")`);
    said = true;
    await sleep(Math.min(500, until - Date.now()), signal);
  }
}

/** A gc's announcement of what it is about to delete; it deletes only before `deadline`. */
export async function announceGc(store: Store, objects: readonly string[], signal?: AbortSignal): Promise<{ key: string; deadline: number }> {
  const now = Date.now();
  const key = `${PENDING_FOLDER}/gc-${randomBytes(8).toString('hex')}.json`;
  const deadline = now + GC_WINDOW_MS;
  const body = { schema: 'tarport.gc-notice/v1', created: new Date(now).toISOString(), deadline: new Date(deadline).toISOString(), objects: [...objects].sort() };
  await store.putAtomic(key, serialize(body), signal);
  return { key, deadline };
}
