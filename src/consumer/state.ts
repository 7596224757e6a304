import { randomUUID } from 'node:crypto';
import { link, mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { TarportError, wrapSystemError } from '../errors.js';

const LoadedSchema = z.object({
  version: z.number().int().positive(),
  record: z.string(),
  digest: z.string(),
  imageId: z.string(),
  loadedAt: z.string(),
  /** Image IDs this tag had before, newest first (for --keep-images). */
  previous: z.array(z.string()).default([]),
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
});
export type State = z.infer<typeof StateSchema>;

function emptyState(): State {
  return { schema: 'tarport.consumer-state/v1', catalogSequence: {}, loaded: {}, catalogStat: {} };
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
    await mkdir(this.dir, { recursive: true });
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
   * that holds it; a lock left by a dead process is taken over.
   */
  async lock(waitMs: number): Promise<() => Promise<void>> {
    await mkdir(this.dir, { recursive: true }).catch((e: unknown) => {
      throw wrapSystemError(e, `create state folder ${this.dir}`);
    });
    const p = join(this.dir, 'lock');
    const deadline = Date.now() + waitMs;
    for (;;) {
      // the lock appears with its pid in it (a link of a written file): an empty lock file would
      // look stale to another run in the moment between creating and writing it
      const mine = `${p}.new-${process.pid}-${randomUUID()}`;
      try {
        await writeFile(mine, `${process.pid}\n`);
        await link(mine, p);
        return async () => {
          await rm(p, { force: true });
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw wrapSystemError(e, `take lock ${p}`);
      } finally {
        await rm(mine, { force: true });
      }
      const seen = await readFile(p, 'utf8').catch(() => '');
      const holder = Number(seen.trim());
      if (!Number.isInteger(holder) || holder <= 0 || !alive(holder)) {
        await takeOverStale(p, seen);
        continue;
      }
      if (Date.now() >= deadline) {
        throw new TarportError('LOCKED', `another tarport run (pid ${holder}) holds the lock ${p}; it will pick up anything new`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/**
 * Removes a stale lock without removing a fresh one: two runs that both judged the same stale lock
 * must not both take it (the second `rm` would delete the first one's new lock). The lock is moved
 * aside under a name of our own; if what was moved is not the stale content we judged, another run
 * took over first, and its lock is put back (link fails if yet another lock appeared meanwhile).
 */
async function takeOverStale(p: string, seen: string): Promise<void> {
  const aside = `${p}.stale-${process.pid}-${randomUUID()}`;
  try {
    await rename(p, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // gone already: try to take it
    throw wrapSystemError(e, `take over stale lock ${p}`);
  }
  const moved = await readFile(aside, 'utf8').catch(() => seen);
  if (moved !== seen) await link(aside, p).catch(() => undefined);
  await rm(aside, { force: true });
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
