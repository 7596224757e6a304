import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DigestCheck } from '../crypto/index.js';
import { TarportError, wrapSystemError } from '../errors.js';

const CHUNK = 4 << 20;
const FLUSH_EVERY = 64 << 20;

/**
 * Copies one local file to another and checks its digest on the way: the very bytes written are the
 * bytes hashed. Reads and writes run on libuv's thread pool while the main thread hashes, three
 * buffers in rotation (read n+1, hash n, write n-1), so a copy costs little more than the hash. The
 * target is made durable (fsync) before this returns; on any failure it is removed.
 */
export async function copyVerified(from: string, to: string, expected: { digest: string; size: number }, what: string, signal?: AbortSignal): Promise<void> {
  const check = new DigestCheck(expected, what);
  let src: FileHandle | undefined;
  let dst: FileHandle | undefined;
  try {
    src = await open(from, 'r').catch((e: unknown) => {
      throw wrapSystemError(e, `read ${what}`);
    });
    await mkdir(dirname(to), { recursive: true });
    dst = await open(to, 'w');
    const bufs = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    const s = src;
    const d = dst;
    let pos = 0;
    let i = 0;
    let reading = s.read(bufs[0]!, 0, CHUNK, 0);
    let writing: Promise<unknown> = Promise.resolve();
    let flushing: Promise<unknown> | undefined;
    let flushedAt = 0;
    for (;;) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      signal?.throwIfAborted();
      const cur = bufs[i % 3]!.subarray(0, bytesRead);
      const at = pos;
      pos += bytesRead;
      // the buffer this read fills was last written two rounds ago; that write has been awaited
      reading = s.read(bufs[(i + 1) % 3]!, 0, CHUNK, pos);
      reading.catch(() => undefined); // awaited next round; an early exit must not leave it unhandled
      check.update(cur);
      await writing;
      writing = writeAll(d, cur, at);
      writing.catch(() => undefined);
      // start write-back early, one flush in flight at a time, so the final fsync finds little left
      if (pos - flushedAt >= FLUSH_EVERY && !flushing) {
        flushedAt = pos;
        const w = writing;
        flushing = w.then(() => d.datasync()).then(
          () => (flushing = undefined),
          () => (flushing = undefined),
        );
      }
      i++;
    }
    await writing;
    await flushing;
    check.finish();
    await dst.sync();
    await dst.close();
    dst = undefined;
  } catch (e) {
    await dst?.close().catch(() => undefined);
    dst = undefined;
    await rm(to, { force: true }).catch(() => undefined);
    if (e instanceof TarportError) throw e;
    throw wrapSystemError(e, `copy ${what} to ${to}`);
  } finally {
    await src?.close().catch(() => undefined);
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off);
    off += bytesWritten;
  }
}
