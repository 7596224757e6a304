import { readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { makeFolders } from '../folders.js';
import { watch as chokidar } from 'chokidar';
import { TarportError, messageOf } from '../errors.js';
import type { ImageRef } from '../repo/index.js';
import { UnnamedArchiveError } from './naming.js';
import type { PublishResult } from './publish.js';

export interface WatchOptions {
  readonly dir: string;
  /** Publishes one file (under `name`, or the archive's own tags). */
  readonly publish: (path: string, name: ImageRef | undefined, signal: AbortSignal) => Promise<PublishResult>;
  readonly nameFor: (path: string) => Promise<ImageRef | undefined>;
  /** A file is looked at once its size and mtime have been still this long. */
  readonly settleMs: number;
  /**
   * A file that stays truncated and still this long is given up on (moved to failed/). With `once`,
   * also the longest the run waits for files still being written before it leaves them.
   */
  readonly giveUpMs: number;
  /** Handle what is in the folder, then return (cron). */
  readonly once: boolean;
  /** Remove published files instead of moving them to done/. */
  readonly removeDone: boolean;
  readonly signal: AbortSignal;
  readonly onEvent?: (e: WatchEvent) => void;
}

export type WatchEvent =
  | { kind: 'published'; file: string; releases: { ref: string; version: number; status: string }[]; uploadedBytes: number }
  | { kind: 'failed'; file: string; code: string; message: string }
  | { kind: 'waiting'; file: string; reason: string }
  /** --once: left in the folder for the next run, and why. */
  | { kind: 'left'; file: string; reason: string }
  | { kind: 'publishing'; file: string }
  | { kind: 'retrying'; file: string; inMs: number; message: string }
  /** Something went wrong beside the publish (the file could not be moved after it): said, and the queue goes on. */
  | { kind: 'warning'; file: string; message: string }
  | { kind: 'watching'; dir: string }
  | { kind: 'stopped' };

export interface WatchSummary {
  published: number;
  failed: number;
  /** Files left for later: still being written, or the server was down. */
  pending: number;
  /** The worst exit code among the failures (2 bad input, 1 run time); 0 when none failed. */
  exitCode: number;
}

/**
 * `watch --once` left files that were still being written for the next run, and nothing failed
 * (sysexits' EX_TEMPFAIL: run again later). Collides with none of 0-3.
 */
export const EXIT_LEFT_FOR_NEXT_RUN = 75;

const OWN = new Set(['done', 'failed']);

/** Files the agent never touches: dot files, partial uploads, its own folders and sidecars. */
export function ignoredName(name: string): boolean {
  return name.startsWith('.') || name.endsWith('.part') || name.endsWith('.tmp') || name.endsWith('.name') || name.endsWith('.reason') || OWN.has(name);
}

/**
 * The producer agent: publishes what lands in a folder, once, then moves it to done/ or failed/
 * (with a .reason file). The folder itself is the queue: a restart (even after kill -9) finds every
 * file that was not moved yet and publishes it; a file published before a crash but not moved is
 * identical content, which makes no new version, and goes to done/.
 */
export async function watchFolder(opts: WatchOptions): Promise<WatchSummary> {
  const emit = opts.onEvent ?? (() => undefined);
  const summary: WatchSummary = { published: 0, failed: 0, pending: 0, exitCode: 0 };
  await makeFolders(join(opts.dir, 'done'));
  await makeFolders(join(opts.dir, 'failed'));
  for (const w of await recoverMoves(opts.dir)) emit({ kind: 'warning', ...w });
  const queued = new Set<string>();
  const retryAt = new Map<string, number>();
  const attempts = new Map<string, number>();
  // how often in a row a file changed while it was read (rewritten)
  const rewrites = new Map<string, number>();
  // one pending retry per file: a 'change' of a file that waits for its retry does not add another
  const timers = new Map<string, NodeJS.Timeout>();
  let left = 0;
  // A file that waits for its retry holds back every file after it: published later, an older
  // archive of a tag would become its newest release (a roll-back). Held files go on, in order,
  // once it is published, failed or gone.
  let blocker: string | undefined;
  const held: string[] = [];
  const release = () => {
    blocker = undefined;
    for (const p of held.splice(0)) enqueue(p);
  };
  // one publish at a time: the catalog is written last by each, and a queue keeps order by arrival
  let chain: Promise<void> = Promise.resolve();

  const schedule = (path: string, delayMs: number) => {
    if (opts.once || opts.signal.aborted) return;
    clearTimeout(timers.get(path));
    const t = setTimeout(() => {
      timers.delete(path);
      enqueue(path);
    }, delayMs);
    timers.set(path, t);
  };

  // A step that throws (a move refused, a file gone) is said and costs that file only: a rejected
  // chain would skip every publish after it, and end the agent as an unhandled rejection.
  const enqueue = (path: string) => {
    if (queued.has(path) || opts.signal.aborted) return;
    queued.add(path);
    chain = chain
      .then(() => handle(path))
      .catch((e: unknown) => emit({ kind: 'warning', file: path, message: messageOf(e) }))
      .finally(() => queued.delete(path));
  };

  /**
   * The file once it held still, or undefined when it is gone. A file that keeps changing (a slow
   * copy; a log written into the folder, which never stops) is said every giveUpMs: the files after
   * it wait for it, since publishing them first could make an older archive a tag's newest release.
   */
  async function settled(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
    let last = await stat(path).catch(() => undefined);
    if (!last?.isFile()) return undefined;
    // wait until the size and mtime hold still for settleMs (a slow copy, an FTP upload, a stick):
    // by the file's own time, or by ours since we saw it so (a modification time in the future,
    // from a host whose clock runs ahead, would otherwise hold the queue for as long)
    let seenSince = Date.now();
    let sayAt = Date.now() + opts.giveUpMs;
    for (;;) {
      const quietFor = Math.max(Date.now() - last.mtimeMs, Date.now() - seenSince);
      if (quietFor >= opts.settleMs) return last;
      if (Date.now() >= sayAt) {
        sayAt += opts.giveUpMs;
        emit({ kind: 'waiting', file: path, reason: `still being written after ${Math.round(opts.giveUpMs / 1000)} s; the files after it wait for it (they are published in order)` });
      }
      await new Promise((r) => setTimeout(r, Math.min(opts.settleMs - quietFor + 50, opts.settleMs)));
      if (opts.signal.aborted) return undefined;
      const now = await stat(path).catch(() => undefined);
      if (!now?.isFile()) return undefined;
      if (now.size !== last.size || now.mtimeMs !== last.mtimeMs) seenSince = Date.now();
      last = now;
    }
  }

  async function moveTo(folder: 'done' | 'failed', path: string): Promise<string> {
    const name = basename(path);
    let target = join(opts.dir, folder, name);
    if (await stat(target).catch(() => undefined)) target = join(opts.dir, folder, `${name}.${new Date().toISOString().replace(/[:.]/g, '-')}`);
    await moveOut(path, target);
    return target;
  }

  async function handle(path: string): Promise<void> {
    if (opts.signal.aborted) return;
    if (blocker !== undefined && blocker !== path) return hold(path);
    const wait = retryAt.get(path);
    // woken before its retry is due (a 'change', or a timer a few ms early): the retry stays due
    if (wait && wait > Date.now()) return schedule(path, wait - Date.now());
    const st = await settled(path);
    if (!st) {
      forget(path);
      return;
    }
    const outcome = await attempt(path);
    if (outcome.kind === 'changed') {
      // its new content arrived before the files that came during its publish: they wait for it
      blocker = path;
      return schedule(path, opts.settleMs);
    }
    if (blocker === path && !retryAt.has(path)) release();
    if (outcome.kind !== 'truncated') return;
    // the size held still, but the archive does not end yet: a writer that pauses. Wait for more,
    // and give up only when it stays like this for giveUpMs.
    if (Date.now() - st.mtimeMs < opts.giveUpMs) {
      emit({ kind: 'waiting', file: path, reason: outcome.error.message });
      schedule(path, opts.settleMs);
      return;
    }
    await fail(path, outcome.error);
  }

  function hold(path: string): void {
    if (held.includes(path)) return;
    held.push(path);
    emit({ kind: 'waiting', file: path, reason: `after ${basename(blocker!)}, which waits for its retry: files are published in order` });
  }

  /** A file that went away: its retry is void, and what it held back goes on. */
  function forget(path: string): void {
    retryAt.delete(path);
    attempts.delete(path);
    rewrites.delete(path);
    if (blocker === path) release();
  }

  /**
   * --once: waits for a file still being written (each wait bounded by the run's deadline), then
   * publishes it; what cannot be finished by the deadline is left, with its reason, for the next run.
   */
  async function handleOnce(path: string, deadline: number): Promise<void> {
    for (;;) {
      const still = await stillBy(path, deadline);
      if (still.kind !== 'still') {
        if (still.kind === 'left') leave(path, still.reason);
        return;
      }
      const outcome = await attempt(path);
      if (outcome.kind === 'changed') continue;
      if (outcome.kind !== 'truncated') return;
      // complete archives end: this one may grow again. Wait for that, until it has been still for
      // --give-up (then it is given up on) or the run's time is up (then it is left)
      const giveUpAt = still.mtimeMs + opts.giveUpMs;
      if (await changedBy(path, still.mtimeMs, Math.min(deadline, giveUpAt))) continue;
      if (opts.signal.aborted) return;
      if (Date.now() >= giveUpAt) return fail(path, outcome.error);
      return leave(path, `the archive does not end yet (${outcome.error.message}), and the file did not grow before the run's --give-up time ran out`);
    }
  }

  /** Waits until the file has held still for settleMs, or says why it is left. */
  async function stillBy(path: string, deadline: number): Promise<{ kind: 'still'; mtimeMs: number } | { kind: 'left'; reason: string } | { kind: 'gone' }> {
    for (;;) {
      if (opts.signal.aborted) return { kind: 'gone' };
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) return { kind: 'gone' };
      const quiet = Date.now() - st.mtimeMs;
      if (quiet >= opts.settleMs) return { kind: 'still', mtimeMs: st.mtimeMs };
      const pause = opts.settleMs - quiet + 50;
      if (Date.now() + pause > deadline) {
        return { kind: 'left', reason: `still being written: it changed ${Math.max(0, Math.round(quiet))} ms ago, and --settle ${opts.settleMs} ms of stillness would end after the run's --give-up time` };
      }
      await sleep(pause, opts.signal);
    }
  }

  /** True when the file's mtime moves past `mtimeMs` before `until`. */
  async function changedBy(path: string, mtimeMs: number, until: number): Promise<boolean> {
    while (Date.now() < until && !opts.signal.aborted) {
      await sleep(Math.min(Math.max(opts.settleMs, 100), 1000, until - Date.now()), opts.signal);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) return false;
      if (st.mtimeMs !== mtimeMs) return true;
    }
    return false;
  }

  function leave(path: string, reason: string): void {
    summary.pending++;
    left++;
    emit({ kind: 'left', file: path, reason });
  }

  /**
   * Publishes a file that held still; moves it to done/ or failed/, or keeps it for a retry. A file
   * written again or replaced under its name while it was read ('changed') is neither: what was
   * read is not what lies there now, so it is published again once it holds still.
   */
  async function attempt(path: string): Promise<{ kind: 'done' | 'changed' } | { kind: 'truncated'; error: TarportError }> {
    let result: PublishResult;
    const before = await identity(path);
    try {
      const name = await opts.nameFor(path);
      emit({ kind: 'publishing', file: path });
      result = await opts.publish(path, name, opts.signal);
    } catch (e) {
      if (opts.signal.aborted) return { kind: 'done' }; // stopped: the file stays and is published next time
      const err = e instanceof TarportError ? e : new TarportError('INTERNAL', `internal error: ${e instanceof Error ? e.message : String(e)}`);
      if (!err.truncated && !fileAtFault(err)) {
        retryLater(path, err);
        return { kind: 'done' };
      }
      // a file truncated and written again in place reads as one that ends early: changed, not cut short
      if (await rewritten(path, before)) return changed(path, `it changed while it was read (${err.message})`);
      if (err.truncated) return { kind: 'truncated', error: err };
      await fail(path, err);
      return { kind: 'done' };
    }
    attempts.delete(path);
    retryAt.delete(path);
    const replaced = await rewritten(path, before);
    // published: a file that cannot be moved away stays, and its next publish is identical content
    // (no new version); said, not a failure of the publish
    const unmoved = replaced ? undefined : await putAway(path).then(() => undefined, (e: unknown) => e);
    summary.published++;
    emit({ kind: 'published', file: path, releases: result.releases.map((r) => ({ ref: `${r.name}:${r.tag}`, version: r.version, status: r.status })), uploadedBytes: result.uploadedBytes });
    for (const w of result.warnings ?? []) emit({ kind: 'warning', file: path, message: w });
    if (replaced) return changed(path, 'it was written again or replaced while it was published: what was read is published, and the file as it is now is published next');
    if (unmoved) emit({ kind: 'warning', file: path, message: `published, but not moved out of the folder (it will be published again, as identical content): ${messageOf(unmoved)}` });
    return { kind: 'done' };
  }

  /**
   * True when the file changed since `before`, at most MAX_REWRITES times in a row for one file: an
   * identity that changes on every look (inode numbers a network file system makes up, a chmod
   * loop) is taken as the file's after that, so no file is published again without end.
   */
  async function rewritten(path: string, before: string | undefined): Promise<boolean> {
    const n = rewrites.get(path) ?? 0;
    if (!(await changedSince(path, before))) {
      rewrites.delete(path);
      return false;
    }
    if (n >= MAX_REWRITES) {
      rewrites.delete(path);
      emit({ kind: 'warning', file: path, message: `it changed while it was read ${n + 1} times in a row; taking what was read as the file` });
      return false;
    }
    rewrites.set(path, n + 1);
    return true;
  }

  function changed(path: string, reason: string): { kind: 'changed' } {
    emit({ kind: 'waiting', file: path, reason: `${reason}; publishing it again once it holds still` });
    return { kind: 'changed' };
  }

  async function putAway(path: string): Promise<void> {
    if (!opts.removeDone) return void (await moveTo('done', path));
    await moveOut(path, undefined);
  }

  /**
   * Not the file's fault (the server is down, the link broke, the repository refused the write, the
   * disk is full): keep the file, try again with growing pauses.
   */
  function retryLater(path: string, err: TarportError): void {
    const n = (attempts.get(path) ?? 0) + 1;
    attempts.set(path, n);
    const inMs = Math.min(1000 * 2 ** n, 300_000);
    if (opts.once) {
      summary.pending++;
      summary.exitCode ||= 1;
      blocker = path; // the files after it are left too (runOnce), in order for the next run
      emit({ kind: 'failed', file: path, code: err.code, message: `${err.message} (left in place for the next run)` });
      return;
    }
    retryAt.set(path, Date.now() + inMs);
    blocker = path;
    emit({ kind: 'retrying', file: path, inMs, message: err.message });
    schedule(path, inMs);
  }

  async function fail(path: string, err: TarportError): Promise<void> {
    retryAt.delete(path);
    attempts.delete(path);
    const target = await moveTo('failed', path).catch(() => path);
    await writeFile(`${target}.reason`, `${err.message}\n\n${advice(err)}\n`).catch(() => undefined);
    summary.failed++;
    summary.exitCode = summary.exitCode === 0 || summary.exitCode === 1 ? (err.code === 'BAD_INPUT' || err.code === 'USAGE' ? 2 : 1) : summary.exitCode;
    emit({ kind: 'failed', file: path, code: err.code, message: err.message });
  }

  /** --once: files that held still first, then those still being written, all by one deadline. */
  async function runOnce(): Promise<void> {
    const deadline = Date.now() + opts.giveUpMs;
    // in the order they arrived, each waited for until it holds still: a quiet file that came later
    // is not published before one still being copied (it would become the tag's newest release)
    for (const f of await byArrival(opts.dir)) {
      if (opts.signal.aborted) return;
      if (blocker !== undefined) leave(f.path, `after ${basename(blocker)}, which could not be published this run: files are published in order`);
      else await handleOnce(f.path, deadline);
    }
  }

  const existing = async () => {
    for (const f of await byArrival(opts.dir)) enqueue(f.path);
  };

  if (opts.once) {
    await runOnce();
    if (summary.exitCode === 0 && left > 0) summary.exitCode = EXIT_LEFT_FOR_NEXT_RUN;
    return summary;
  }

  const watcher = chokidar(opts.dir, {
    depth: 0,
    ignoreInitial: true,
    ignored: (p: string) => p !== opts.dir && ignoredName(basename(p)),
  });
  // a watcher that fails (the inotify limit reached, the folder gone) says so; unheard, its 'error'
  // would end the agent
  watcher.on('error', (e: unknown) => emit({ kind: 'warning', file: opts.dir, message: `watching the folder failed: ${messageOf(e)}` }));
  // what arrives while the files already there are put in order waits behind them: a newer file
  // must not be queued before an older one the first look has not reached yet
  let early: string[] | undefined = [];
  const arrived = (p: string) => (early ? early.push(p) : enqueue(p));
  watcher.on('add', arrived);
  watcher.on('change', arrived);
  await new Promise<void>((r) => watcher.once('ready', () => r()));
  emit({ kind: 'watching', dir: opts.dir });
  await existing();
  for (const p of early.splice(0)) enqueue(p);
  early = undefined;
  await new Promise<void>((r) => (opts.signal.aborted ? r() : opts.signal.addEventListener('abort', () => r(), { once: true })));
  for (const t of timers.values()) clearTimeout(t);
  await watcher.close();
  await chain.catch(() => undefined);
  emit({ kind: 'stopped' });
  return summary;
}

/** How often in a row one file may change while it is read before what was read is taken as it. */
const MAX_REWRITES = 3;

/**
 * The hidden name of a file's `.name` sidecar while the file moves out: a dot file (ignoredName), and
 * the file's inode, which tells the file that was moving from a later one of the same name.
 */
const movingSidecar = (path: string, ino: number) => join(dirname(path), `.${basename(path)}.${ino}.name.moving`);
const MOVING_SIDECAR = /^\.(.+)\.(\d+)\.name\.moving$/;

/**
 * Moves a file and its `.name` sidecar out of the folder (to `target`, or removed). Two renames are
 * never one step: the sidecar is hidden first, so an agent killed between them leaves no
 * `<file>.name` behind to name a later file of the same name (recoverMoves puts things right).
 */
async function moveOut(path: string, target: string | undefined): Promise<void> {
  const hidden = movingSidecar(path, (await stat(path)).ino);
  const had = await rename(`${path}.name`, hidden).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      throw e;
    },
  );
  if (target) await rename(path, target);
  else await rm(path, { force: true });
  if (!had) return;
  if (target) await rename(hidden, `${target}.name`);
  else await rm(hidden, { force: true });
}

/**
 * After an agent killed mid-move (moveOut): a hidden sidecar whose file is still in the folder goes
 * back beside it (the file is handled again, under the same name); one whose file went, though a
 * later file may have its name, is dropped.
 */
async function recoverMoves(dir: string): Promise<{ file: string; message: string }[]> {
  const said: { file: string; message: string }[] = [];
  for (const n of await readdir(dir)) {
    const m = MOVING_SIDECAR.exec(n);
    if (!m) continue;
    const file = join(dir, m[1]!);
    const st = await stat(file).catch(() => undefined);
    if (st?.isFile() && String(st.ino) === m[2]) {
      await rename(join(dir, n), `${file}.name`);
      said.push({ file, message: `an agent stopped while it moved this file away: its .name sidecar (${n}) is put back beside it, and the file is handled again` });
    } else {
      await rm(join(dir, n), { force: true });
      said.push({ file, message: `an agent stopped while it moved this file away: the file went, and its left-over .name sidecar (${n}) is removed, so it names no later file` });
    }
  }
  return said;
}

/**
 * A fault of the file itself goes to failed/ with its reason: a bad archive or name, or one tarport
 * could not handle (an internal error, which would recur on every try). Any other is kept and tried
 * again: it is the repository's, the link's or this host's, and the file is not to blame.
 */
function fileAtFault(err: TarportError): boolean {
  return err.code === 'BAD_INPUT' || err.code === 'USAGE' || err.code === 'INTERNAL';
}

/** What names one version of a file: replaced (another inode) or written again (size, times) differs. */
async function identity(path: string): Promise<string | undefined> {
  const st = await stat(path, { bigint: true }).catch(() => undefined);
  return st ? [st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join(':') : undefined;
}

/** True when the file at `path` is there and is no longer the one `before` named. */
async function changedSince(path: string, before: string | undefined): Promise<boolean> {
  const now = await identity(path);
  return now !== undefined && now !== before;
}

/** Sleeps, or returns early when the signal fires. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, Math.max(0, ms));
    signal.addEventListener('abort', done, { once: true });
  });
}

function advice(e: TarportError): string {
  if (e.truncated) return 'The file stopped growing before the archive ended. Copy it again (write to NAME.part, then rename), or check the disk.';
  if (e instanceof UnnamedArchiveError) return 'Name it: put NAME:TAG into a file beside it called <file>.name, or run the agent with --name-map PATTERN=NAME:TAG.';
  if (e.code === 'BAD_INPUT') return 'Make the archive again with docker save (or docker export) and drop it into the folder again.';
  return 'Fix the cause above, then move the file back into the watched folder.';
}

/**
 * The files waiting in the folder, in the order they arrived: by when each was made (its birth
 * time; where the file system keeps none, its last write), then by name. Not by name alone:
 * build-10.tar sorts before build-9.tar, and published in that order (a cron run, an agent's
 * restart) the older archive would become the tag's newest release. Not by last write: a file
 * still being written would go behind those that came after it.
 */
async function byArrival(dir: string): Promise<{ path: string; mtimeMs: number }[]> {
  const files: { path: string; name: string; mtimeMs: number; arrived: number }[] = [];
  for (const name of await readdir(dir)) {
    if (ignoredName(name)) continue;
    const path = join(dir, name);
    const st = await stat(path).catch(() => undefined);
    if (st?.isFile()) files.push({ path, name, mtimeMs: st.mtimeMs, arrived: st.birthtimeMs > 0 ? st.birthtimeMs : st.mtimeMs });
  }
  // birth times are coarse (a few ms): two files made in the same tick go by last write, then name
  return files.sort((a, b) => a.arrived - b.arrived || a.mtimeMs - b.mtimeMs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
