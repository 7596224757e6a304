// OpenPGP packet framing (RFC 4880 §4.2) for the streaming decryptor: packet headers, and packet
// bodies followed through their partial lengths. Bodies are parsed synchronously over whatever
// chunks arrive, so that a message cut into 1-byte partial lengths costs a few operations per byte
// rather than an await, an allocation and a cipher call per byte.

import { TarportError } from '../errors.js';

export type Len = { kind: 'definite'; n: number } | { kind: 'partial'; n: number } | { kind: 'rest' };

export interface Header {
  tag: number;
  len: Len;
  raw: Buffer;
}

/** RFC 4880 §4.2.2.4: "The first partial length MUST be at least 512 octets long." */
export const MIN_FIRST_PARTIAL = 512;
/** Small body parts are copied together into pieces of this size before anyone sees them. */
const GATHER = 64 << 10;
/** Parts at least this long are passed on as views, without copying. */
const VIEW = 4 << 10;

/** Pulls exact byte counts out of an async stream of chunks: the message `name`s (the object it is stored as). */
export class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  constructor(
    private readonly it: AsyncIterator<Buffer>,
    readonly name: string,
  ) {}

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    }
    return this.buf.length >= n;
  }

  async exact(n: number, what: string): Promise<Buffer> {
    if (!(await this.fill(n))) throw new TarportError('INTEGRITY', `${this.name}: the OpenPGP message ends inside ${what}`);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Up to `n` bytes (at least one), or undefined at the end. */
  async some(n: number): Promise<Buffer | undefined> {
    if (this.buf.length === 0) await this.fill(1);
    if (this.buf.length === 0) return undefined;
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    return out;
  }

  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }
}

async function readNewLength(r: ByteReader): Promise<{ len: Len; raw: Buffer }> {
  const a = (await r.exact(1, 'a packet length'))[0]!;
  if (a < 192) return { len: { kind: 'definite', n: a }, raw: Buffer.from([a]) };
  if (a < 224) {
    const b = (await r.exact(1, 'a packet length'))[0]!;
    return { len: { kind: 'definite', n: ((a - 192) << 8) + b + 192 }, raw: Buffer.from([a, b]) };
  }
  if (a === 255) {
    const b = await r.exact(4, 'a packet length');
    return { len: { kind: 'definite', n: b.readUInt32BE(0) }, raw: Buffer.concat([Buffer.from([a]), b]) };
  }
  return { len: { kind: 'partial', n: 1 << (a & 0x1f) }, raw: Buffer.from([a]) };
}

/** The next packet header of an unencrypted packet sequence, or undefined at its end. */
export async function readHeader(r: ByteReader): Promise<Header | undefined> {
  if (await r.atEnd()) return undefined;
  const first = (await r.exact(1, 'a packet header'))[0]!;
  if ((first & 0x80) === 0) throw new TarportError('INTEGRITY', `${r.name}: not an OpenPGP message (bad packet header)`);
  if (first & 0x40) {
    const { len, raw } = await readNewLength(r);
    return { tag: first & 0x3f, len, raw: Buffer.concat([Buffer.from([first]), raw]) };
  }
  const tag = (first >> 2) & 0x0f;
  const lt = first & 3;
  if (lt === 3) return { tag, len: { kind: 'rest' }, raw: Buffer.from([first]) };
  const b = await r.exact(1 << lt, 'a packet length');
  const n = lt === 0 ? b[0]! : lt === 1 ? b.readUInt16BE(0) : b.readUInt32BE(0);
  return { tag, len: { kind: 'definite', n }, raw: Buffer.concat([Buffer.from([first]), b]) };
}

/**
 * Follows one packet body through its partial lengths. Body bytes come out in `out`: long parts as
 * views of the input, short parts copied together into pieces of GATHER bytes, so every consumer
 * (the cipher, the hash, the inflater) is called per piece, never per part.
 */
export class BodyParser {
  private left: number;
  private last: boolean;
  private readonly rest: boolean;
  /** A length header split between two chunks. */
  private hdr: number[] = [];
  /** Made on first use: a packet of a few bytes (a marker, a header) should not cost 64 KiB. */
  private acc: Buffer | undefined;
  private accN = 0;
  done: boolean;

  constructor(len: Len, what: string) {
    if (len.kind === 'partial' && len.n < MIN_FIRST_PARTIAL) {
      throw new TarportError('INTEGRITY', `${what}: an OpenPGP packet whose first partial body length is under the ${MIN_FIRST_PARTIAL} bytes RFC 4880 requires`);
    }
    this.rest = len.kind === 'rest';
    this.left = len.kind === 'rest' ? Infinity : len.n;
    this.last = len.kind !== 'partial';
    this.done = len.kind === 'definite' && len.n === 0;
  }

  /** Takes body bytes from `buf` into `out`; returns how many bytes of `buf` the body took. */
  push(buf: Buffer, out: Buffer[]): number {
    const n = buf.length;
    let i = 0;
    while (i < n && !this.done) {
      if (this.left === 0) {
        const j = this.hdr.length === 0 ? this.tinyParts(buf, i, out) : i;
        i = j > i ? j : this.header(buf, i);
        continue;
      }
      const take = Math.min(this.left, n - i);
      if (take >= VIEW) {
        this.flush(out);
        out.push(buf.subarray(i, i + take));
      } else {
        this.copy(buf, i, take, out);
      }
      i += take;
      this.left -= take;
      if (this.left === 0 && this.last) this.done = true;
    }
    if (this.done) this.flush(out);
    return i;
  }

  /** The input ended: a body that is not complete is cut short (an indeterminate one ends here). */
  end(out: Buffer[], what: string): void {
    if (!this.done && !this.rest) throw new TarportError('INTEGRITY', `${what}: the OpenPGP message is cut short`);
    this.done = true;
    this.flush(out);
  }

  /**
   * A run of whole partial parts of at most 16 bytes, copied in one tight loop: the framing a
   * hostile (or odd) writer can choose to make every byte cost a header (RFC 4880 allows it after
   * the first part). Returns the position after the run.
   */
  private tinyParts(buf: Buffer, i: number, out: Buffer[]): number {
    const n = buf.length;
    for (;;) {
      if (this.accN > GATHER - 16) this.flush(out);
      const acc = (this.acc ??= Buffer.allocUnsafe(GATHER));
      let k = this.accN;
      const stop = GATHER - 16;
      while (i < n && k <= stop) {
        // 1-byte parts, the worst case, without the general loop's shift and inner loop
        while (buf[i] === 0xe0 && i + 1 < n && k <= stop) {
          acc[k++] = buf[i + 1]!;
          i += 2;
        }
        if (i >= n || k > stop) break;
        const a = buf[i]!;
        if (a < 224 || a > 228) break; // not a partial length of 1 to 16 bytes
        const size = 1 << (a & 0x1f);
        if (i + 1 + size > n) break;
        i++;
        for (let e = i + size; i < e; i++) acc[k++] = buf[i]!;
      }
      const filled = k > stop;
      this.accN = k;
      if (!filled) return i;
    }
  }

  private copy(buf: Buffer, i: number, take: number, out: Buffer[]): void {
    while (take > 0) {
      if (this.accN === GATHER) this.flush(out);
      const acc = (this.acc ??= Buffer.allocUnsafe(GATHER));
      const k = Math.min(take, GATHER - this.accN);
      if (k < 16) {
        // tiny parts: a loop beats a call into C++
        for (let j = 0; j < k; j++) acc[this.accN + j] = buf[i + j]!;
      } else {
        buf.copy(acc, this.accN, i, i + k);
      }
      this.accN += k;
      i += k;
      take -= k;
    }
  }

  private flush(out: Buffer[]): void {
    if (this.accN === 0 || !this.acc) return;
    out.push(this.acc.subarray(0, this.accN));
    this.acc = undefined;
    this.accN = 0;
  }

  /** Reads (part of) the length of the next part; returns the new position in `buf`. */
  private header(buf: Buffer, i: number): number {
    if (this.hdr.length === 0) {
      // the one-octet lengths, without touching the array (1-byte partial lengths run here)
      const a = buf[i]!;
      if (a >= 224 && a < 255) {
        this.left = 1 << (a & 0x1f);
        this.last = false;
        return i + 1;
      }
      if (a < 192) {
        this.left = a;
        this.last = true;
        if (a === 0) this.done = true;
        return i + 1;
      }
    }
    this.hdr.push(buf[i]!);
    const a = this.hdr[0]!;
    const need = a < 192 ? 1 : a < 224 ? 2 : a === 255 ? 5 : 1;
    if (this.hdr.length < need) return i + 1;
    const h = this.hdr;
    this.hdr = [];
    if (a >= 224 && a < 255) {
      this.left = 1 << (a & 0x1f);
      this.last = false;
      return i + 1;
    }
    this.last = true;
    this.left = a < 192 ? a : a < 224 ? ((a - 192) << 8) + h[1]! + 192 : ((h[1]! << 24) >>> 0) + (h[2]! << 16) + (h[3]! << 8) + h[4]!;
    if (this.left === 0) this.done = true;
    return i + 1;
  }
}

/** What a packet sequence reports to whoever reads it. */
export interface PacketSink {
  packet(tag: number): void;
  data(piece: Buffer): void;
  close(): void;
}

/**
 * A sequence of packets parsed synchronously over arbitrary chunks (decrypted or inflated bytes):
 * each packet's start, body pieces and end go to the sink.
 */
export class PacketStream {
  private hdr: number[] = [];
  private body: BodyParser | undefined;

  constructor(
    private readonly sink: PacketSink,
    private readonly what: string,
  ) {}

  push(buf: Buffer): void {
    let i = 0;
    while (i < buf.length) {
      if (!this.body) {
        i = this.header(buf, i);
        continue;
      }
      const out: Buffer[] = [];
      i += this.body.push(i === 0 ? buf : buf.subarray(i), out);
      this.deliver(out);
    }
  }

  /** The input ended: only an indeterminate-length packet may still be open. */
  end(): void {
    if (this.hdr.length > 0) throw new TarportError('INTEGRITY', `${this.what}: the OpenPGP message is cut short inside a packet header`);
    if (!this.body) return;
    const out: Buffer[] = [];
    this.body.end(out, this.what);
    this.deliver(out);
  }

  private deliver(out: Buffer[]): void {
    for (const p of out) this.sink.data(p);
    if (this.body?.done) {
      this.body = undefined;
      this.sink.close();
    }
  }

  private header(buf: Buffer, i: number): number {
    const first = this.hdr.length > 0 ? this.hdr[0]! : buf[i]!;
    if ((first & 0x80) === 0) throw new TarportError('INTEGRITY', `${this.what}: the decrypted data is not a sequence of OpenPGP packets`);
    this.hdr.push(buf[i]!);
    const len = headerLength(this.hdr);
    if (!len) return i + 1;
    const tag = first & 0x40 ? first & 0x3f : (first >> 2) & 0x0f;
    this.hdr = [];
    this.sink.packet(tag);
    this.body = new BodyParser(len, this.what);
    if (this.body.done) this.deliver([]);
    return i + 1;
  }
}

/** The length a header of these bytes declares, or undefined while bytes are missing. */
function headerLength(h: number[]): Len | undefined {
  const first = h[0]!;
  if (first & 0x40) {
    if (h.length < 2) return undefined;
    const a = h[1]!;
    if (a < 192) return { kind: 'definite', n: a };
    if (a < 224) return h.length < 3 ? undefined : { kind: 'definite', n: ((a - 192) << 8) + h[2]! + 192 };
    if (a < 255) return { kind: 'partial', n: 1 << (a & 0x1f) };
    return h.length < 6 ? undefined : { kind: 'definite', n: ((h[2]! << 24) >>> 0) + (h[3]! << 16) + (h[4]! << 8) + h[5]! };
  }
  const lt = first & 3;
  if (lt === 3) return { kind: 'rest' };
  const bytes = 1 << lt;
  if (h.length < 1 + bytes) return undefined;
  let n = 0;
  for (let k = 1; k <= bytes; k++) n = n * 256 + h[k]!;
  return { kind: 'definite', n };
}
