import type { Writable } from 'node:stream';

/**
 * Buffers lent by the stage that filled them (a zstd codec's output) to whoever writes them out, and
 * given back once written so that the next output reuses the memory. Fresh megabytes cost more CPU
 * than zstd itself (their pages fault in from the kernel and miss the CPU's cache: docs/install.md,
 * "zstd speed, measured"); a buffer given back costs none.
 *
 * The rule that keeps this safe: only the last holder of a chunk gives it back, once nothing reads
 * it any more (a file's or a socket's write callback has run, or a sink has hashed or copied it).
 * Stages that pass a chunk on unchanged (pass-throughs, hashing transforms) keep no reference and
 * give nothing back; a stage that keeps a chunk (collects it, tees it) never gives it back, and
 * then the lender simply allocates afresh. Giving back a buffer that was not lent, or a piece of
 * one, does nothing. This sits below every layer: it knows nothing of codecs, files or transports.
 */
const lenders = new WeakMap<Buffer, Owner>();

/** Whoever takes a lent buffer back (a Lender; a codec thread's stand-in that sends it home). */
export interface Owner {
  release(buf: Buffer): void;
}

/** Marks `buf` as lent by `owner`: giving it back calls `owner.release(buf)` (once). */
export function lendOut(buf: Buffer, owner: Owner): Buffer {
  lenders.set(buf, owner);
  return buf;
}

/** Gives back a chunk whose bytes nobody will read again; a no-op for any buffer not lent. */
export function giveBack(buf: Buffer): void {
  const owner = lenders.get(buf);
  if (!owner) return;
  lenders.delete(buf);
  owner.release(buf);
}

/**
 * Pipes `src` into `dest` with back-pressure, as `src.pipe(dest)` does, giving each chunk back once
 * `dest`'s write of it has called back: for a destination that is the last holder of what it is
 * written and has a write callback but no `_write` (an HTTP request body: its socket is done with a
 * chunk when the callback runs). When `dest` closes, `src` is paused and no longer read (as `pipe`
 * leaves it: its owner destroys it).
 */
export function pipeGivingBack(src: NodeJS.ReadableStream, dest: NodeJS.WritableStream & { once(e: 'close' | 'drain', f: () => void): unknown }): void {
  const onData = (c: Buffer) => {
    if (!dest.write(c, (e?: Error | null) => e || giveBack(c))) {
      src.pause();
      dest.once('drain', () => src.resume());
    }
  };
  src.on('data', onData);
  src.once('end', () => dest.end());
  dest.once('close', () => {
    src.removeListener('data', onData);
    src.pause();
  });
}

/**
 * Makes a writer give back each chunk once its write has completed (its write callback ran without
 * error): for writers that are the last holder of what they are given (a file, a socket).
 */
export function givingBack<W extends Writable>(w: W): W {
  const write = w._write.bind(w);
  w._write = (chunk: Buffer, enc, cb) => write(chunk, enc, (e?: Error | null) => (e || giveBack(chunk), cb(e)));
  if (w._writev) {
    const writev = w._writev.bind(w);
    w._writev = (chunks, cb) => writev(chunks, (e?: Error | null) => (e || chunks.forEach((c) => giveBack(c.chunk as Buffer)), cb(e)));
  }
  return w;
}

/**
 * A few buffers of one size: `take` gives a given-back one or a fresh one, `lend` marks one as out
 * (with its reader, who may give it back), `release` takes one back. Only buffers lent, whole, and
 * not given back yet are taken back, and at most `keep` wait for reuse.
 */
export class Lender implements Owner {
  private readonly out = new WeakSet<Buffer>();
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    private readonly keep: number,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(this.size);
  }

  lend(buf: Buffer): Buffer {
    this.out.add(buf);
    return lendOut(buf, this);
  }

  release(buf: Buffer): void {
    if (!this.out.has(buf)) return; // not ours, a piece of one, or given back before
    this.out.delete(buf);
    lenders.delete(buf);
    this.adopt(buf);
  }

  /** Takes in a buffer of this size to reuse (one given back from another thread). */
  adopt(buf: Buffer): void {
    if (buf.length === this.size && this.free.length < this.keep) this.free.push(buf);
  }
}
