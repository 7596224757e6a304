import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarportError, messageOf } from '../errors.js';
import { backoffMs } from './retry.js';

export interface ResumeOptions {
  /** First byte to deliver. */
  readonly offset: number;
  /** How many times a broken stream is reopened where it broke. */
  readonly retries: number;
  readonly what: string;
  readonly signal?: AbortSignal;
  /** Decides whether an error is worth a reconnect. */
  readonly retryable: (e: unknown) => boolean;
  /** Called with the bytes re-requested on each resume (0 re-sent bytes is the point). */
  readonly onResume?: (at: number) => void;
}

/**
 * One download attempt: write the bytes from `offset` on into `sink` (end it or not: it is this
 * attempt's own), resolve once the server confirmed the whole transfer, stop when `signal` aborts.
 */
export type DownloadAttempt = (offset: number, sink: Writable, signal: AbortSignal) => Promise<void>;

/**
 * A download that survives cut connections: when an attempt fails, another starts at the byte where
 * it broke (FTP REST, SFTP read offset) with growing pauses, up to `retries` times. The returned
 * stream ends only when an attempt succeeded; it fails with the last error otherwise.
 *
 * Each attempt writes into a sink that pushes straight into the returned stream: one hop between
 * the socket and the reader, which matters at loopback speeds with 64 KiB socket reads.
 */
export function resumableDownload(attempt: DownloadAttempt, opts: ResumeOptions): Readable {
  let delivered = 0;
  let wake: (() => void) | undefined;
  let current: AbortController | undefined;
  const out = new Readable({
    highWaterMark: 1 << 20,
    read() {
      const w = wake;
      wake = undefined;
      w?.();
    },
    destroy(err, cb) {
      // the reader gave up: stop the attempt under way, so its connection is not left hanging
      current?.abort();
      wake = undefined;
      cb(err);
    },
  });
  (async () => {
    for (let n = 0; ; n++) {
      opts.signal?.throwIfAborted();
      const ac = new AbortController();
      current = ac;
      const sink = new Writable({
        highWaterMark: 1 << 20,
        write(chunk: Buffer, _e, cb) {
          if (out.destroyed) {
            cb(new TarportError('ABORTED', `${opts.what}: the reader stopped`, { retryable: false }));
            return;
          }
          delivered += chunk.length;
          if (out.push(chunk)) cb();
          else wake = cb;
        },
      });
      try {
        await attempt(opts.offset + delivered, sink, ac.signal);
        if (!out.destroyed) out.push(null);
        return;
      } catch (e) {
        if (out.destroyed) return;
        if (n >= opts.retries || !opts.retryable(e) || opts.signal?.aborted) throw e;
        opts.onResume?.(opts.offset + delivered);
        await new Promise((r) => setTimeout(r, backoffMs(n)));
      }
    }
  })().catch((e: unknown) => {
    out.destroy(e instanceof TarportError ? e : new TarportError('CONNECTION', `${opts.what}: ${messageOf(e)}`, { cause: e }));
  });
  // a consumer that reads nothing yet must not miss an early failure (a missing file)
  out.on('error', () => undefined);
  return out;
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
  /** One upload attempt: `src` holds the bytes from `offset` on (APPE, or a write at an offset). */
  readonly upload: (src: Readable, offset: number) => Promise<void>;
  /** How many bytes the server holds now (undefined: nothing). */
  readonly remoteSize: () => Promise<number | undefined>;
  /** Removes what a failed upload left. */
  readonly cleanup: () => Promise<void>;
  readonly onResume?: (at: number) => void;
}

/**
 * An upload that survives cut connections: after a failure it asks the server how much arrived and
 * sends only the rest, from a fresh source that skips what is there. The final size is checked; a
 * failed upload is removed, so nothing half-written stays.
 */
export async function resumableWrite(open: () => Readable, opts: ResumableWriteOptions): Promise<{ size: number }> {
  let total = 0;
  for (let attempt = 0; ; attempt++) {
    opts.signal?.throwIfAborted();
    const have = attempt === 0 ? 0 : ((await opts.remoteSize().catch(() => 0)) ?? 0);
    if (attempt > 0) opts.onResume?.(have);
    let n = 0;
    let sourceFailed = false;
    const raw = open();
    raw.once('error', () => (sourceFailed = true));
    const src = skipAndCount(raw, have, (k) => (n = k));
    try {
      await opts.upload(src, have);
      if (sourceFailed) throw new TarportError('IO', `${opts.what}: the source failed`, { retryable: false });
      total = have + n;
      break;
    } catch (e) {
      src.destroy();
      // a failing source is not the server's fault: trying again cannot help
      if (sourceFailed || attempt >= opts.retries || !opts.retryable(e) || opts.signal?.aborted) {
        await opts.cleanup().catch(() => undefined);
        throw e;
      }
      await new Promise((r) => setTimeout(r, backoffMs(attempt)));
    }
  }
  const got = await opts.remoteSize();
  if (got !== total) {
    await opts.cleanup().catch(() => undefined);
    throw new TarportError('IO', `${opts.what}: the server holds ${got ?? 'no'} bytes, ${total} were sent`, { retryable: true });
  }
  return { size: total };
}

/** Drops the first `skip` bytes of a stream and reports how many bytes came after them. */
export function skipAndCount(src: Readable, skip: number, onCount: (n: number) => void): Readable {
  let seen = 0;
  let passed = 0;
  const t = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb) {
      const start = Math.max(0, Math.min(chunk.length, skip - seen));
      seen += chunk.length;
      if (start < chunk.length) {
        passed += chunk.length - start;
        onCount(passed);
        cb(null, start === 0 ? chunk : chunk.subarray(start));
      } else cb();
    },
  });
  src.on('error', (e) => t.destroy(e));
  // the upload may attach its own listeners only after connecting: until then an early source
  // error must not go unhandled (resumableWrite notices it through the source itself)
  t.on('error', () => undefined);
  return src.pipe(t);
}
