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
const lenders = new WeakMap<Buffer, Lender>();

/** Gives back a chunk whose bytes nobody will read again; a no-op for any buffer not lent. */
export function giveBack(buf: Buffer): void {
  lenders.get(buf)?.release(buf);
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
export class Lender {
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
    lenders.set(buf, this);
    return buf;
  }

  release(buf: Buffer): void {
    if (!this.out.has(buf)) return; // not ours, a piece of one, or given back before
    this.out.delete(buf);
    lenders.delete(buf);
    if (this.free.length < this.keep) this.free.push(buf);
  }
}
