import pRetry, { AbortError } from 'p-retry';
import { TarportError } from '../errors.js';

/** Backoff shared by every retry in the transports: 200 ms, doubling, at most 5 s between tries. */
export const BACKOFF = { minTimeout: 200, factor: 2, maxTimeout: 5000 } as const;

/**
 * What a request ends with when its transport's owner closed the transport under it (or asks after
 * that): given up on purpose, so never tried again. One wording for every transport.
 */
export function closedByOwner(what: string, cause?: unknown): TarportError {
  return new TarportError('ABORTED', `${what}: the transport was closed by its owner; the request was given up`, { ...(cause === undefined ? {} : { cause }), retryable: false });
}

/** The pause before try number `attempt + 2` (the resumable streams wait on their own). */
export function backoffMs(attempt: number): number {
  return Math.min(BACKOFF.minTimeout * BACKOFF.factor ** attempt, BACKOFF.maxTimeout);
}

/**
 * Runs `fn` with p-retry: errors are classified once, and only those marked retryable (a dropped
 * connection, a server that is not there yet) are tried again, `retries` times at most.
 * Authentication, permission, disk-full and trust errors fail at once, classified.
 */
export function withRetries<T>(fn: () => Promise<T>, opts: { retries: number; classify: (e: unknown) => TarportError; signal?: AbortSignal }): Promise<T> {
  return pRetry(
    async () => {
      try {
        return await fn();
      } catch (e) {
        const err = opts.classify(e);
        if (!err.retryable) throw new AbortError(err);
        throw err;
      }
    },
    { retries: opts.retries, ...BACKOFF, ...(opts.signal ? { signal: opts.signal } : {}) },
  );
}
