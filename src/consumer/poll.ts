import { TarportError, isRefusalCode, isTarportError } from '../errors.js';
import type { Runtime } from '../runtime/index.js';
import type { Repository } from '../repo/index.js';
import { pull, type PullEvent, type PullOptions } from './pull.js';

export interface PollOptions extends Omit<PullOptions, 'cheap' | 'skip' | 'throwOnRefused' | 'onEvent'> {
  readonly intervalMs: number;
  /** Every this many polls, read the catalog even when its stat did not change (safety net). */
  readonly fullEvery?: number;
  readonly signal: AbortSignal;
  readonly onEvent?: (e: PollEvent) => void;
}

export type PollEvent =
  | PullEvent
  | { kind: 'poll-failed'; message: string; code: string; retryInMs: number }
  /** A refused release (integrity or trust): left alone until the catalog offers another record for its tag. */
  | { kind: 'skipping'; ref: string; digest: string; code: string }
  /** A release that failed for a transient reason (daemon, network, server): tried again soon. */
  | { kind: 'retrying'; ref: string; code: string; message: string; retryInMs: number }
  /** A round's end: `ok` when nothing in it was refused or failed (the last success time follows it). */
  | { kind: 'round'; ok: boolean }
  | { kind: 'stopped' };

/**
 * The consumer agent: pulls every interval until the signal aborts. An idle poll costs one small
 * request (a stat of the catalog). A release refused for integrity or trust is skipped, logged, and
 * tried again only when the catalog offers a different record for its tag; the others keep being
 * served. A transient failure (a daemon or server that is down, a network fault) never skips a
 * release: it is logged and tried again after a pause that grows from 1 s up to the interval. Abort stops at once: a load in flight
 * is cut before the daemon sees its manifest, so no tag ever points at half an image.
 */
export async function poll(repo: Repository, docker: Runtime, opts: PollOptions): Promise<void> {
  const emit = opts.onEvent ?? (() => undefined);
  const skip = new Map<string, string>();
  const fullEvery = opts.fullEvery ?? 10;
  let failures = 0; // rounds in a row with a transient failure: the pause grows
  // a repository with nothing published yet is said once; later rounds are "nothing new" (debug)
  let saidEmpty = false;
  const onPull = (e: PullEvent) => {
    if (e.kind === 'empty' && saidEmpty) return emit({ kind: 'idle' });
    if (e.kind === 'empty') saidEmpty = true;
    emit(e);
  };
  for (let n = 0; !opts.signal.aborted; n++) {
    const retryInMs = Math.min(opts.intervalMs, backoffMs(failures));
    let transient = false;
    let ok = false;
    try {
      const r = await pull(repo, docker, {
        ...opts,
        // after a transient failure the catalog is read again, whatever its stat says
        cheap: failures === 0 && n % fullEvery !== 0,
        skip,
        throwOnRefused: false,
        lockWaitMs: opts.lockWaitMs ?? 1000,
        onEvent: onPull,
      });
      for (const f of r.refused) {
        if (isRefusalCode(f.code)) {
          skip.set(f.ref, f.digest);
          emit({ kind: 'skipping', ref: f.ref, digest: f.digest, code: f.code });
        } else {
          transient = true;
          emit({ kind: 'retrying', ref: f.ref, code: f.code, message: f.message, retryInMs });
        }
      }
      ok = r.refused.length === 0;
    } catch (e) {
      if (opts.signal.aborted) break;
      const err = e instanceof TarportError ? e : new TarportError('INTERNAL', `internal error: ${e instanceof Error ? e.message : String(e)}`);
      // a run that holds the lock, a server or daemon that is down, a catalog refused: try again
      transient = !isRefusalCode(err.code);
      if (isTarportError(e, 'LOCKED')) emit({ kind: 'warning', message: err.message });
      else emit({ kind: 'poll-failed', message: err.message, code: err.code, retryInMs: transient ? retryInMs : opts.intervalMs });
    }
    failures = transient ? failures + 1 : 0;
    emit({ kind: 'round', ok });
    await sleep(transient ? retryInMs : opts.intervalMs, opts.signal);
  }
  emit({ kind: 'stopped' });
}

/** Pauses after transient failures: 1 s, doubling, never longer than the poll interval. */
function backoffMs(failures: number): number {
  return 1000 * 2 ** Math.min(failures, 16);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
