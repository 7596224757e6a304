import { constants as fsc, createReadStream, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { TarportError, messageOf } from '../errors.js';
import type { ByteSink, Source } from './types.js';

const CHUNK = 1 << 20; // 1 MiB: the default 64 KiB halves hashing speed downstream (LIMITS.md)
/** A read of 1 MiB from the page cache takes ~0.1-0.3 ms; one slower than this came from a device. */
const SLOW_READ_MS = 4;

/**
 * A failure of what an upload reads, not of the server: trying the upload again cannot help, so it
 * is never retried. The message keeps the source's own words.
 */
export function sourceError(e: unknown, what: string): TarportError {
  if (e instanceof TarportError && !e.retryable) return e;
  return new TarportError('IO', `${what}: reading the source failed: ${messageOf(e)}`, { cause: e, retryable: false });
}

/**
 * The source's bytes from `from` on, as a stream whose failures are source errors (see sourceError).
 * `onCount` hears how many bytes passed so far.
 */
export function readableFrom(source: Source, from: number, what: string, onCount?: (n: number) => void): Readable {
  let raw: Readable;
  try {
    raw = typeof source === 'function' ? source() : createReadStream(source.file, { start: from, highWaterMark: CHUNK });
  } catch (e) {
    throw sourceError(e, what); // a source that cannot even open is no reason to retry either
  }
  const skip = typeof source === 'function' ? from : 0;
  let seen = 0;
  let passed = 0;
  const t = new Transform({
    highWaterMark: CHUNK,
    transform(chunk: Buffer, _e, cb) {
      const start = Math.max(0, Math.min(chunk.length, skip - seen));
      seen += chunk.length;
      if (start < chunk.length) {
        passed += chunk.length - start;
        onCount?.(passed);
        cb(null, start === 0 ? chunk : chunk.subarray(start));
      } else cb();
    },
  });
  raw.on('error', (e: Error) => t.destroy(sourceError(e, what)));
  // an upload may attach its listeners only after it connected: until then an early source error
  // must not go unhandled (the attempt sees it through the stream itself)
  t.on('error', () => undefined);
  // an attempt that gives up (aborted, cut, one part of a split upload done) destroys `t`: pipe()
  // would only pause the source, which keeps its file (or a spool reader's handle) open; one per
  // failed attempt runs an agent on a flaky link out of file descriptors
  t.once('close', () => raw.destroy());
  // a source that failed before it was asked for (a layer that broke while the transport opened its
  // file) emits nothing more: its stored fault is the upload's, or the upload would wait for ever
  const early = raw.errored ?? (raw.destroyed && !raw.readableEnded ? new Error('the source was closed before it was read') : undefined);
  if (early) {
    t.destroy(sourceError(early, what));
    return t;
  }
  return raw.pipe(t);
}

/** Runs `p` without leaving its rejection unhandled while nobody awaits it yet. */
function held<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/**
 * Sends the source's bytes from `from` on through `send`, which resolves once the chunk's memory may
 * be reused. A file is read into three buffers of its own, in rotation, with two sends in flight:
 * no fresh memory per chunk, and the next read overlaps the sends. A stream's chunks go as they come,
 * four in flight. Resolves with the bytes sent; a source that fails rejects with a source error.
 */
export async function sendFrom(source: Source, from: number, what: string, send: (chunk: Buffer) => Promise<void>, slowReadMs = SLOW_READ_MS): Promise<number> {
  const inflight: Promise<void>[] = [];
  let sent = 0;
  try {
    if (typeof source === 'function') {
      for await (const chunk of readableFrom(source, from, what)) {
        if (inflight.length >= 4) await inflight.shift();
        inflight.push(held(send(chunk as Buffer)));
        sent += (chunk as Buffer).length;
      }
    } else {
      const fh = await open(source.file, 'r').catch((e: unknown) => {
        throw sourceError(e, what);
      });
      try {
        const size = (await fh.stat()).size;
        // one byte more than the file holds, so that a small file takes one read, and a file that
        // grew is still read to its end
        const len = Math.max(1, Math.min(CHUNK, size - from + 1));
        const bufs = [Buffer.allocUnsafe(len), Buffer.allocUnsafe(len), Buffer.allocUnsafe(len)];
        // Reads run on this thread while they are fast (a file in the page cache, as the spool file
        // just written is): on two cores a thread-pool read per MiB competes with the server and
        // cost up to a third of an upload's speed. The first slow read (a cold disk, a stick)
        // sends the rest to the thread pool, so the event loop never waits on a device.
        let inline = true;
        for (let i = 0, pos = from; ; i++) {
          const b = bufs[i % bufs.length]!;
          if (inflight.length >= bufs.length - 1) await inflight.shift();
          let bytesRead: number;
          try {
            if (inline) {
              const t0 = performance.now();
              bytesRead = readSync(fh.fd, b, 0, b.length, pos);
              if (performance.now() - t0 > slowReadMs) inline = false;
            } else bytesRead = (await fh.read(b, 0, b.length, pos)).bytesRead;
          } catch (e) {
            throw sourceError(e, what);
          }
          if (bytesRead === 0) break;
          pos += bytesRead;
          sent += bytesRead;
          inflight.push(held(send(bytesRead === b.length ? b : b.subarray(0, bytesRead))));
        }
        await Promise.all(inflight.splice(0));
      } finally {
        // no buffer goes back to the file's reads while a send may still hold it
        await Promise.allSettled(inflight);
        await fh.close();
      }
    }
    await Promise.all(inflight.splice(0));
  } finally {
    await Promise.allSettled(inflight);
  }
  return sent;
}

/** readTo for transports whose reads are streams: their chunks are fresh, so lending them costs nothing. */
export async function drainInto(src: Readable, sink: ByteSink): Promise<number> {
  let n = 0;
  for await (const c of src) {
    const r = sink(c as Buffer);
    if (r) await r;
    n += (c as Buffer).length;
  }
  return n;
}

/**
 * readTo for a local file: two buffers of its own in rotation, the next read running while the sink
 * has the current one.
 */
export async function readFileInto(path: string, offset: number, sink: ByteSink, signal: AbortSignal | undefined, what: string): Promise<number> {
  // no link followed, no FIFO waited on: a repository's file is a plain file, or it is refused
  const fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK).catch((e: unknown) => {
    throw new TarportError((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'NOT_FOUND' : 'IO', `${what}: ${messageOf(e)}`, { cause: e });
  });
  let reading: Promise<{ bytesRead: number }> | undefined;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TarportError('INTEGRITY', `${what}: ${st.isDirectory() ? 'a folder' : 'not a plain file'}, where a file belongs; refusing`, { retryable: false });
    const size = st.size;
    const len = Math.max(1, Math.min(CHUNK, size - offset + 1));
    const bufs = [Buffer.allocUnsafe(len), Buffer.allocUnsafe(len)];
    let pos = offset;
    let n = 0;
    reading = fh.read(bufs[0]!, 0, len, pos);
    for (let i = 0; ; i++) {
      const { bytesRead } = await reading;
      reading = undefined;
      if (bytesRead === 0) return n;
      signal?.throwIfAborted();
      pos += bytesRead;
      n += bytesRead;
      reading = fh.read(bufs[(i + 1) % 2]!, 0, len, pos);
      const r = sink(bufs[i % 2]!.subarray(0, bytesRead));
      if (r) await r;
    }
  } finally {
    await reading?.catch(() => undefined);
    await fh.close();
  }
}
