import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarportError, messageOf } from '../errors.js';
import { backoffMs } from './retry.js';
import type { ByteSink } from './types.js';
import { linkSignals } from '../signals.js';

export interface ResumeOptions {
  /** First byte to deliver. */
  readonly offset: number;
  /** How many times a broken stream is reopened where it broke. */
  readonly retries: number;
  readonly what: string;
  readonly signal?: AbortSignal;
  /** Decides whether an error is worth a reconnect. */
  readonly retryable: (e: unknown) => boolean;
  /** The error to report when the read gives up (default: e itself, or CONNECTION when it is not a TarportError). */
  readonly classify?: (e: unknown) => TarportError;
  /** Called with the bytes re-requested on each resume (0 re-sent bytes is the point). */
  readonly onResume?: (at: number) => void;
}

/**
 * One download attempt: deliver the bytes from `offset` on into `sink`, in order; resolve once the
 * server confirmed the whole transfer, stop when `signal` aborts.
 */
export type SinkAttempt = (offset: number, sink: ByteSink, signal: AbortSignal) => Promise<void>;

/** An attempt that delivered this much before it broke made progress: the count of failures starts again. */
export const RESUME_PROGRESS_BYTES = 1 << 20;

/**
 * A download into a sink that survives cut connections: when an attempt fails, another starts at
 * the byte where it broke (FTP REST, SFTP read offset) with growing pauses, up to `retries` times
 * in a row without progress.
 * A byte counts as delivered once the sink was handed it (a stream has it from that moment, a
 * hashing sink has hashed it), so a resumed attempt neither repeats nor skips one; and the next
 * attempt starts only after the sink finished with the last chunk, so its calls never overlap.
 * A failing sink is not the server's fault: its error ends the download at once.
 * Resolves with the bytes delivered.
 */
export async function resumableInto(attempt: SinkAttempt, sink: ByteSink, opts: ResumeOptions): Promise<number> {
  let delivered = 0;
  let sinkFailed: { e: unknown } | undefined;
  let pending: Promise<void> | undefined;
  const counted: ByteSink = (chunk) => {
    delivered += chunk.length;
    let r: void | Promise<void>;
    try {
      r = sink(chunk);
    } catch (e) {
      sinkFailed = { e };
      throw e;
    }
    if (!r) return;
    pending = r.catch((e: unknown) => {
      sinkFailed = { e };
      throw e;
    });
    return pending;
  };
  // n: the attempts in a row that failed without moving RESUME_PROGRESS_BYTES (only those count
  // against `retries`: a cache that answers each range with a part, or a link cut now and then
  // through a long download, goes on as long as every attempt brings something)
  for (let n = 0; ; n++) {
    opts.signal?.throwIfAborted();
    const ac = new AbortController();
    const stop = () => ac.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', stop, { once: true });
    const before = delivered;
    try {
      await attempt(opts.offset + delivered, counted, ac.signal);
      return delivered;
    } catch (e) {
      await pending?.catch(() => undefined); // the sink finishes its chunk before anything else
      if (sinkFailed) throw sinkFailed.e;
      if (delivered - before >= RESUME_PROGRESS_BYTES) n = 0;
      if (n >= opts.retries || !opts.retryable(e) || opts.signal?.aborted) {
        if (opts.classify) throw opts.classify(e);
        throw e instanceof TarportError ? e : new TarportError('CONNECTION', `${opts.what}: ${messageOf(e)}`, { cause: e });
      }
      opts.onResume?.(opts.offset + delivered);
      await pause(backoffMs(n), opts.signal);
    } finally {
      opts.signal?.removeEventListener('abort', stop);
    }
  }
}

/**
 * One download attempt for clients that write into a Writable (end it or not: it is this attempt's
 * own); resolve once the server confirmed the whole transfer.
 */
export type DownloadAttempt = (offset: number, sink: Writable, signal: AbortSignal) => Promise<void>;

/**
 * A stream fed by `run`, which delivers into the sink it is given and resolves when all is there.
 * Chunks are kept as they come, not copied: `run` must hand over buffers of their own (a socket's
 * fresh reads), never lent ones. Reading nothing for a while holds `run` back; destroying the stream
 * aborts the signal `run` got, so its connection is not left hanging.
 */
export function sinkStream(run: (sink: ByteSink, signal: AbortSignal) => Promise<unknown>, what: string, signal?: AbortSignal): Readable {
  let wake: (() => void) | undefined;
  const stopper = new AbortController();
  const out = new Readable({
    highWaterMark: 1 << 20,
    read() {
      const w = wake;
      wake = undefined;
      w?.();
    },
    destroy(err, cb) {
      stopper.abort(new TarportError('ABORTED', `${what}: the reader stopped`, { retryable: false }));
      // a delivery waiting for room ends too: nobody will read
      const w = wake;
      wake = undefined;
      w?.();
      cb(err);
    },
  });
  const push: ByteSink = (chunk) => {
    if (out.destroyed) throw new TarportError('ABORTED', `${what}: the reader stopped`, { retryable: false });
    if (!out.push(chunk)) return new Promise<void>((r) => (wake = r));
  };
  const link = linkSignals([signal, stopper.signal]);
  run(push, link.signal)
    .then(
      () => {
        if (!out.destroyed) out.push(null);
      },
      (e: unknown) => {
        if (!out.destroyed) out.destroy(e instanceof TarportError ? e : new TarportError('CONNECTION', `${what}: ${messageOf(e)}`, { cause: e }));
      },
    )
    .finally(() => link.unlink());
  // a consumer that reads nothing yet must not miss an early failure (a missing file)
  out.on('error', () => undefined);
  return out;
}

/**
 * resumableInto for clients that write into a Writable, as a stream: it ends only when an attempt
 * succeeded, and fails with the last error otherwise.
 */
export function resumableDownload(attempt: DownloadAttempt, opts: ResumeOptions): Readable {
  return sinkStream((sink, signal) => resumableInto((offset, deliver, sig) => attempt(offset, writableInto(deliver), sig), sink, { ...opts, signal }), opts.what, opts.signal);
}

/** A Writable that hands each chunk to `sink` and takes the next once the sink is done with it. */
function writableInto(sink: ByteSink): Writable {
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _e, cb) {
      let r: void | Promise<void>;
      try {
        r = sink(chunk);
      } catch (e) {
        cb(e as Error);
        return;
      }
      if (r) r.then(() => cb(), cb);
      else cb();
    },
  });
}

/** resumableDownload for sources that are streams: each attempt opens one at the offset. */
export function resumableRead(open: (offset: number) => Promise<Readable>, opts: ResumeOptions): Readable {
  return resumableDownload(async (offset, sink, signal) => {
    const src = await open(offset);
    await pipeline(src, sink, { signal });
  }, opts);
}

export interface ResumableWriteOptions {
  readonly retries: number;
  readonly what: string;
  readonly signal?: AbortSignal;
  readonly retryable: (e: unknown) => boolean;
  /**
   * One upload attempt: send the source's bytes from `offset` on (APPE, or a write at an offset);
   * resolve with the bytes sent. A source that fails rejects with a source error (not retryable).
   * `sourceEnded(total)`: the attempt handed the source's last byte to the link (the source holds
   * `total`) and waits for the server to confirm it.
   */
  readonly upload: (offset: number, sourceEnded: (total: number) => void) => Promise<number>;
  /** How many bytes the server holds now (undefined: nothing). */
  readonly remoteSize: () => Promise<number | undefined>;
  /** Removes what a failed upload left. */
  readonly cleanup: () => Promise<void>;
  readonly onResume?: (at: number) => void;
}

/**
 * An upload that survives cut connections: after a failure it asks the server how much arrived and
 * sends only the rest (see readableFrom and sendFrom for the views of the source). The final size is
 * checked; a failed upload is removed, so nothing half-written stays.
 */
export async function resumableWrite(opts: ResumableWriteOptions): Promise<{ size: number }> {
  let total = 0;
  let sourceTotal: number | undefined;
  const sourceEnded = (n: number) => void (sourceTotal = n);
  for (let attempt = 0; ; attempt++) {
    opts.signal?.throwIfAborted();
    const held = attempt === 0 ? undefined : await opts.remoteSize().catch(() => undefined);
    const have = held ?? 0;
    if (attempt > 0) opts.onResume?.(have);
    // an attempt sent every byte and only the server's confirmation was lost (a control connection
    // gone silent): the server holds them all, and an upload of nothing would be refused by some
    // servers (vsftpd answers an empty APPE to a file an earlier session wrote with 426)
    if (held !== undefined && held === sourceTotal) {
      total = have;
      break;
    }
    try {
      total = have + (await opts.upload(have, sourceEnded));
      break;
    } catch (e) {
      // a failing source is not the server's fault: it is not retryable, so this gives up at once
      if (attempt >= opts.retries || !opts.retryable(e) || opts.signal?.aborted) {
        await opts.cleanup().catch(() => undefined);
        throw e;
      }
      await pause(backoffMs(attempt), opts.signal);
    }
  }
  const got = await opts.remoteSize();
  if (got !== total) {
    await opts.cleanup().catch(() => undefined);
    throw new TarportError('IO', `${opts.what}: the server holds ${got ?? 'no'} bytes, ${total} were sent`, { retryable: true });
  }
  return { size: total };
}

/** Waits `ms`, or less once `signal` aborts (the loop's next check then throws its reason). */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
