import { TarportError, isTarportError } from '../errors.js';
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

export type PollEvent = PullEvent | { kind: 'poll-failed'; message: string; code: string } | { kind: 'stopped' };

/**
 * The consumer agent: pulls every interval until the signal aborts. An idle poll costs one small
 * request (a stat of the catalog). A release that fails verification is skipped, logged, and tried
 * again only when the catalog offers a different record for its tag; the others keep being served.
 * A server that is down is tried again at the next interval. Abort stops at once: a load in flight
 * is cut before the daemon sees its manifest, so no tag ever points at half an image.
 */
export async function poll(repo: Repository, docker: Runtime, opts: PollOptions): Promise<void> {
  const emit = opts.onEvent ?? (() => undefined);
  const skip = new Map<string, string>();
  const fullEvery = opts.fullEvery ?? 10;
  for (let n = 0; !opts.signal.aborted; n++) {
    try {
      const r = await pull(repo, docker, {
        ...opts,
        cheap: n % fullEvery !== 0,
        skip,
        throwOnRefused: false,
        lockWaitMs: opts.lockWaitMs ?? 1000,
        onEvent: emit,
      });
      for (const f of r.refused) skip.set(f.ref, f.digest);
    } catch (e) {
      if (opts.signal.aborted) break;
      const err = e instanceof TarportError ? e : new TarportError('INTERNAL', `internal error: ${e instanceof Error ? e.message : String(e)}`);
      // a run that holds the lock, a server that is down, a catalog refused: try again next round
      if (isTarportError(e, 'LOCKED')) emit({ kind: 'warning', message: err.message });
      else emit({ kind: 'poll-failed', message: err.message, code: err.code });
    }
    await sleep(opts.intervalMs, opts.signal);
  }
  emit({ kind: 'stopped' });
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
