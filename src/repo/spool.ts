import { EventEmitter, once } from 'node:events';
import { open, writeFile, type FileHandle } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { TarportError } from '../errors.js';
import { giveBack } from '../lending.js';

const CHUNK = 1 << 20;

/**
 * A local spool file that is read while it is written: a push uploads a layer as it is compressed
 * into the spool, instead of after (the spool stays what a broken upload resumes or starts over
 * from). `writer()` fills the file; each `reader()` streams it from the start, waiting at the end of
 * what was written so far until more comes, and ends once the writer finished. A writer that fails
 * fails every reader.
 */
export class GrowingFile {
  private written = 0;
  private done = false;
  private fault: Error | undefined;
  private readonly events = new EventEmitter();

  private constructor(readonly path: string) {
    // every upload attempt (a retry) is a reader of its own
    this.events.setMaxListeners(0);
  }

  /** Creates the (empty) file, so that a reader may open it before the first byte is written. */
  static async create(path: string): Promise<GrowingFile> {
    await writeFile(path, '');
    return new GrowingFile(path);
  }

  private wake(): void {
    this.events.emit('more');
  }

  /** The file's writer; a chunk counts as written once the file holds it (then it is given back, see lending.ts). */
  writer(): Writable {
    let fh: FileHandle | undefined;
    return new Writable({
      highWaterMark: CHUNK,
      construct: (cb) => void open(this.path, 'r+').then((h) => ((fh = h), cb()), cb),
      write: (chunk: Buffer, _e, cb) => {
        void writeAll(fh!, chunk).then(() => {
          this.written += chunk.length;
          giveBack(chunk);
          this.wake();
          cb();
        }, cb);
      },
      final: (cb) => {
        const h = fh;
        fh = undefined;
        void h!.close().then(() => {
          this.done = true;
          this.wake();
          cb();
        }, cb);
      },
      destroy: (err, cb) => {
        if (!this.done) this.fault ??= err ?? new TarportError('IO', `the spool ${this.path} stopped before its end`);
        this.wake();
        const h = fh;
        fh = undefined;
        if (h) void h.close().then(() => cb(err), () => cb(err));
        else cb(err);
      },
    });
  }

  /** The file from its first byte, as it grows; ends when the writer finished. */
  reader(): Readable {
    let fh: FileHandle | undefined;
    let pos = 0;
    let pumping = false;
    const r: Readable = new Readable({
      highWaterMark: CHUNK,
      construct: (cb) => void open(this.path, 'r').then((h) => ((fh = h), cb()), cb),
      read: () => {
        if (pumping) return;
        pumping = true;
        void this.pump(r, () => fh, () => pos, (n) => (pos += n)).finally(() => (pumping = false));
      },
      destroy: (err, cb) => {
        const h = fh;
        fh = undefined;
        if (h) void h.close().then(() => cb(err), () => cb(err));
        else cb(err);
      },
    });
    return r;
  }

  /** Pushes what is written beyond `pos` into `r` while it wants more; waits at the end of what was written. */
  private async pump(r: Readable, fh: () => FileHandle | undefined, pos: () => number, advance: (n: number) => void): Promise<void> {
    try {
      for (;;) {
        if (r.destroyed) return;
        if (this.fault) return void r.destroy(this.fault);
        const avail = this.written - pos();
        if (avail > 0) {
          const buf = Buffer.allocUnsafe(Math.min(CHUNK, avail));
          const { bytesRead } = await fh()!.read(buf, 0, buf.length, pos());
          if (r.destroyed) return;
          if (bytesRead === 0) throw new TarportError('IO', `the spool ${this.path} is shorter than what was written to it`);
          advance(bytesRead);
          if (!r.push(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))) return;
          continue;
        }
        if (this.done) return void r.push(null);
        await once(this.events, 'more');
      }
    } catch (e) {
      r.destroy(e as Error);
    }
  }
}

/** Writes all of `buf` at the file's position (a write may take only part of it). */
async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}
