import { randomBytes } from 'node:crypto';
import { link, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as z from 'zod';
import { TarportError, wrapSystemError } from '../errors.js';
import { makeFolders } from '../folders.js';

const LoadedSchema = z.object({
  version: z.number().int().positive(),
  record: z.string(),
  digest: z.string(),
  imageId: z.string(),
  loadedAt: z.string(),
  /** The release's creation time as its signed record says: orders releases across repositories. */
  created: z.string().optional(),
  /** What makes two releases the same (the record's contentKey): one image pushed to two repositories is no rollback. */
  contentKey: z.string().optional(),
  /** The load's place in this state's order of loads (State.loads): later loads have higher ones, whatever the clock did. */
  order: z.number().int().nonnegative().optional(),
  /** A multi-platform release's platform the load was for (--platform, else the runtime's): another one asked for loads again. */
  platform: z.string().optional(),
  /** Of those, the ones retention kept (a name or a container on them) and has said so once. */
  keptSaid: z.array(z.string()).optional(),
  /** Image IDs this tag had before, newest first (for --keep-images). */
  previous: z.array(z.string()).default([]),
  /** Loaded, and the hook (--hook) not yet run to its end: the next run runs it. */
  hookPending: z.boolean().optional(),
});
export type Loaded = z.infer<typeof LoadedSchema>;

const StateSchema = z.object({
  schema: z.literal('tarport.consumer-state/v1'),
  /** Per repository location: the highest catalog sequence accepted (rollback protection). */
  catalogSequence: z.record(z.string(), z.number().int().nonnegative()),
  /** Per repository location, per "name:tag": what was loaded last. */
  loaded: z.record(z.string(), z.record(z.string(), LoadedSchema)),
  /** Per repository location: size and modification time of the catalog last read (cheap polls). */
  catalogStat: z.record(z.string(), z.object({ size: z.number(), mtime: z.number() })).default({}),
  /** How many loads this state recorded (Loaded.order). */
  loads: z.number().int().nonnegative().default(0),
});
export type State = z.infer<typeof StateSchema>;

function emptyState(): State {
  return { schema: 'tarport.consumer-state/v1', catalogSequence: {}, loaded: {}, catalogStat: {}, loads: 0 };
}

/** The consumer's local state: what was loaded, written atomically (temp file, fsync, rename). */
export class StateStore {
  constructor(readonly dir: string) {}

  get cacheDir(): string {
    return join(this.dir, 'cache');
  }

  async read(): Promise<State> {
    const p = join(this.dir, 'state.json');
    let text: string;
    try {
      text = await readFile(p, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw wrapSystemError(e, `read consumer state ${p}`);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new TarportError('CONFIG', `consumer state ${p} is not valid JSON (${(e as Error).message}); move it away to start afresh (everything will be loaded again)`);
    }
    const r = StateSchema.safeParse(raw);
    if (!r.success) throw new TarportError('CONFIG', `consumer state ${p} is not a tarport state file; move it away to start afresh`);
    return r.data;
  }

  async write(state: State): Promise<void> {
    await makeFolders(this.dir).catch((e: unknown) => {
      throw wrapSystemError(e, `create state folder ${this.dir}`);
    });
    const p = join(this.dir, 'state.json');
    const tmp = join(this.dir, `.state-${process.pid}.tmp`);
    try {
      const fh = await open(tmp, 'w');
      await fh.writeFile(JSON.stringify(state, null, 2) + '\n');
      await fh.sync();
      await fh.close();
      await rename(tmp, p);
    } catch (e) {
      await rm(tmp, { force: true });
      throw wrapSystemError(e, `write consumer state ${p}`);
    }
  }

  /**
   * Takes the state directory's lock (one run per host and state). Waits up to `waitMs` for a run
   * that holds it; a lock left by a dead process is taken over. See takeLock for why no two runs can
   * ever hold it at once.
   */
  async lock(waitMs: number): Promise<() => Promise<void>> {
    await makeFolders(this.dir).catch((e: unknown) => {
      throw wrapSystemError(e, `create state folder ${this.dir}`);
    });
    return takeLock(join(this.dir, 'lock'), waitMs);
  }
}

/**
 * The lock is a file that names its holder's pid, and it never exists without that name in it: the
 * holder writes a file of its own, then link()s it into place, which fails when a lock exists (an
 * exclusive create that cannot be seen half-written, unlike create-then-write).
 *
 * A lock whose holder is dead is broken by exactly one process: breaking needs a marker created
 * exclusively (`wx`) whose name is the stale lock file's identity (inode and modification time, which a rename keeps), so the
 * processes that all saw the same stale lock race for one marker, and only its winner moves the lock
 * away (rename to a unique name, then checked to be that very file). A late process that saw the old
 * lock finds its marker taken and cannot break the new holder's lock. Markers are tidied by holders
 * after a minute, far beyond the few system calls between a look at the lock and its marker.
 */
export async function takeLock(p: string, waitMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + waitMs;
  const unique = `${process.pid}-${randomBytes(6).toString('hex')}`;
  const mine = `${p}.${unique}.new`;
  for (;;) {
    if (await linkInto(mine, p)) {
      await tidyMarkers(p);
      return async () => {
        await rm(p, { force: true });
      };
    }
    const seen = await lockHolder(p);
    if (!seen) continue; // released meanwhile: try again at once
    const lives = await holderLives(seen);
    // broken (or gone meanwhile): try again at once; another process breaking it is waited for as a
    // live holder is, within the same bound, never in a loop that spins
    if (!lives && (await breakStale(p, seen, unique))) continue;
    if (Date.now() >= deadline) {
      throw new TarportError('LOCKED', lives ? `another tarport run (pid ${seen.pid}) holds the lock ${p}; it will pick up anything new` : `the lock ${p} of a stopped run (pid ${seen.pid}) is being broken by another run`);
    }
    await new Promise((r) => setTimeout(r, 100 + Math.random() * 100));
  }
}

/** Writes this process's pid to `tmp` and links it to `p`; false when a lock is there. */
async function linkInto(tmp: string, p: string): Promise<boolean> {
  try {
    await writeFile(tmp, `${await selfMark()}\n`, { flag: 'w' });
    await link(tmp, p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw wrapSystemError(e, `take lock ${p}`);
  } finally {
    await rm(tmp, { force: true }).catch(() => undefined);
  }
}

interface Holder {
  readonly pid: number;
  /** When the holder started (clock ticks since boot, from /proc): absent in a lock of tarport before 0.4, or off Linux. */
  readonly start?: string;
  /** The lock file's identity: a new lock at the same path is another file. */
  readonly id: string;
}

/** Who holds the lock at `p`, or undefined when there is none. */
async function lockHolder(p: string): Promise<Holder | undefined> {
  let fh;
  try {
    fh = await open(p, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw wrapSystemError(e, `read lock ${p}`);
  }
  try {
    const st = await fh.stat({ bigint: true });
    const text = (await fh.readFile('utf8')).trim();
    // a lock is never written empty or in parts (linkInto); anything else was not made by tarport
    const m = /^(\d{1,10})(?: (\d{1,20}))?$/.exec(text);
    return { pid: m ? Number(m[1]) : 0, ...(m?.[2] ? { start: m[2] } : {}), id: `${st.ino}-${st.mtimeNs}` };
  } finally {
    await fh.close();
  }
}

/** Moves the stale lock `seen` away, if this process wins the right to; else does nothing. */
async function breakStale(p: string, seen: Holder, unique: string): Promise<boolean> {
  const marker = `${p}.break-${seen.id}`;
  try {
    await writeFile(marker, `${process.pid}\n`, { flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw wrapSystemError(e, `break stale lock ${p}`);
    // another process breaks it; a marker older than a breaking takes was left by a breaker that
    // died between its marker and its rename: nobody else would ever remove it (holders tidy
    // markers, and no holder can come while the stale lock stays)
    const st = await stat(marker).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > MARKER_STALE_MS) {
      await rm(marker, { force: true });
      return true;
    }
    return false;
  }
  const moved = `${p}.${unique}.stale`;
  try {
    await rename(p, moved);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw wrapSystemError(e, `break stale lock ${p}`);
  }
  const got = await lockHolder(moved);
  if (got && got.id !== seen.id) {
    // not the lock judged stale (cannot happen while markers are exclusive): put it back untouched
    await link(moved, p).catch(() => undefined);
  }
  await rm(moved, { force: true });
  return true;
}

/** How old a break marker may get before its breaker is taken as dead (breaking takes a few calls). */
const MARKER_STALE_MS = 60_000;

/** Removes break markers and leftovers older than a minute (a holder does this; see takeLock). */
async function tidyMarkers(p: string): Promise<void> {
  const dir = dirname(p);
  const base = basename(p);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    if (!n.startsWith(`${base}.`)) continue;
    const f = join(dir, n);
    const st = await stat(f).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > MARKER_STALE_MS) await rm(f, { force: true }).catch(() => undefined);
  }
}

/**
 * Whether the lock's holder still runs. A pid alone is not enough: a lock outlives a process that was
 * killed (SIGKILL, out of memory, power lost), and its pid comes back, to another process after a
 * reboot, or to this very process when tarport is a container's first process (pid 1, every time).
 * So the lock also names when its holder started, and a live process with that pid that started at
 * another time is not the holder.
 */
async function holderLives(h: Holder): Promise<boolean> {
  if (h.pid <= 0) return false;
  if (h.pid === process.pid) return h.start !== undefined && h.start === (await startOf(process.pid));
  if (!alive(h.pid)) return false;
  if (h.start === undefined) return true;
  const now = await startOf(h.pid);
  return now === undefined || now === h.start;
}

/** This process as a lock names it: its pid and, where /proc tells, when it started. */
async function selfMark(): Promise<string> {
  const start = await startOf(process.pid);
  return start === undefined ? `${process.pid}` : `${process.pid} ${start}`;
}

/** A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), if /proc has it. */
async function startOf(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // the command name (field 2) is in parentheses and may hold spaces or ')': fields follow the last ')'
  const fields = stat?.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = fields?.[19];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
