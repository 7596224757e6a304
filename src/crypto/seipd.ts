// The bulk of OpenPGP encryption done with node:crypto (RFC 4880 §5.13, Symmetrically Encrypted
// Integrity Protected Data, version 1, with its Modification Detection Code): what gpg 2.2 reads and
// writes. openpgp.js keeps the parts that need an OpenPGP library — keys and the public-key
// encrypted session keys — while AES-CFB and SHA-1 run in OpenSSL at several hundred MB/s
// (openpgp.js's own streaming decryption reaches a third of gpg's speed on this machine).

import { createCipheriv, createHash, randomBytes, timingSafeEqual, type Cipher, type Hash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { finished } from 'node:stream/promises';
import { createInflate, createInflateRaw, type Inflate, type InflateRaw } from 'node:zlib';
import { TarportError } from '../errors.js';
import { BodyParser, ByteReader, PacketStream, readHeader, type Header, type Len, type PacketSink } from './packets.js';

const CHUNK_LOG = 20; // partial body lengths of 1 MiB
const CHUNK = 1 << CHUNK_LOG;
const PARTIAL = 0xe0 | CHUNK_LOG;

/** A definite new-format body length. */
function encodeLength(n: number): Buffer {
  if (n < 192) return Buffer.from([n]);
  if (n < 8384) return Buffer.from([((n - 192) >> 8) + 192, (n - 192) & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xff;
  b.writeUInt32BE(n, 1);
  return b;
}

/**
 * Frames a body stream as one packet with partial body lengths (the length is not known up front).
 * Chunks are passed on as they are, split only where a partial length ends: no copying.
 */
class PacketFramer {
  private parts: Buffer[] = [];
  private len = 0;
  constructor(private readonly emit: (b: Buffer) => void) {}

  write(b: Buffer): void {
    while (b.length > 0) {
      const room = CHUNK - this.len;
      const take = b.length <= room ? b : b.subarray(0, room);
      this.parts.push(take);
      this.len += take.length;
      b = b.subarray(take.length);
      if (this.len === CHUNK) {
        this.emit(Buffer.from([PARTIAL]));
        for (const p of this.parts) this.emit(p);
        this.parts = [];
        this.len = 0;
      }
    }
  }

  end(): void {
    this.emit(encodeLength(this.len));
    for (const p of this.parts) this.emit(p);
    this.parts = [];
    this.len = 0;
  }
}

const SYMMETRIC: Record<string, { cipher: string; bytes: number }> = {
  aes128: { cipher: 'aes-128-cfb', bytes: 16 },
  aes192: { cipher: 'aes-192-cfb', bytes: 24 },
  aes256: { cipher: 'aes-256-cfb', bytes: 32 },
};

/**
 * Encrypts a stream into the SEIPD packet that follows the session-key packets `pkesk`: output is a
 * complete binary OpenPGP message (PKESK… + SEIPDv1 holding one literal data packet + MDC).
 */
export class SeipdEncrypt extends Transform {
  private readonly cipher: Cipher;
  private readonly mdc: Hash = createHash('sha1');
  private readonly outer: PacketFramer;
  private readonly literal: PacketFramer;

  constructor(pkesk: Buffer, sessionKey: Buffer) {
    super({ highWaterMark: CHUNK });
    if (sessionKey.length !== 32) throw new TarportError('INTERNAL', 'internal error: AES-256 session key expected');
    this.cipher = createCipheriv('aes-256-cfb', sessionKey, Buffer.alloc(16));
    this.push(pkesk);
    this.push(Buffer.from([0xc0 | 18])); // SEIPD, new format
    this.outer = new PacketFramer((b) => this.push(b));
    this.outer.write(Buffer.from([1])); // version 1
    const prefix = randomBytes(16);
    this.plain(Buffer.concat([prefix, prefix.subarray(14, 16)]));
    this.plain(Buffer.from([0xc0 | 11])); // literal data packet, new format
    this.literal = new PacketFramer((b) => this.plain(b));
    this.literal.write(Buffer.from([0x62, 0, 0, 0, 0, 0])); // 'b'inary, no file name, no date
  }

  private plain(b: Buffer): void {
    this.mdc.update(b);
    this.outer.write(this.cipher.update(b));
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.literal.write(chunk);
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.literal.end();
    this.plain(Buffer.from([0xd3, 0x14])); // MDC packet header: hashed, then the hash itself
    this.outer.write(this.cipher.update(this.mdc.digest()));
    this.outer.write(this.cipher.final());
    this.outer.end();
    cb();
  }
}

const NO_BYTES = Buffer.alloc(0);

/**
 * CFB decryption in parallel: P[i] = C[i] xor E(C[i-1]), and E of every ciphertext block can be
 * computed at once with ECB, which OpenSSL pipelines (several GB/s with AES-NI) where its CFB
 * decryption runs block after block. Encryption has no such shortcut (each block needs the last).
 * The ciphertext is not gathered: a block split between two pieces is joined on its own, the
 * keystream of the block before a piece comes from an ECB call of its own, and the plaintext is the
 * keystream buffer (OpenSSL's output, ours) with the ciphertext xored in; ciphertext that is not
 * 8-byte aligned is copied once, into a reused buffer, for the 64-bit xor.
 */
export class CfbDecipher {
  private readonly ecb: Cipher;
  private prev: Buffer = Buffer.alloc(16);
  private pending: Buffer = NO_BYTES;
  /** An 8-byte aligned copy of ciphertext that is not aligned, reused (see xorInto). */
  private scratch: Buffer = NO_BYTES;

  constructor(algorithm: string, key: Buffer) {
    this.ecb = createCipheriv(algorithm.replace('-cfb', '-ecb'), key, null);
    this.ecb.setAutoPadding(false);
  }

  /** The plaintext of `c`, as far as whole blocks reach, in pieces; the rest waits for more. */
  update(c: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (this.pending.length > 0) {
      const need = 16 - this.pending.length;
      if (c.length < need) {
        this.pending = Buffer.concat([this.pending, c]);
        return out;
      }
      this.blocks(Buffer.concat([this.pending, c.subarray(0, need)]), out);
      c = c.subarray(need);
    }
    const n = c.length - (c.length % 16);
    if (n > 0) this.blocks(c.subarray(0, n), out);
    this.pending = n < c.length ? Buffer.from(c.subarray(n)) : NO_BYTES;
    return out;
  }

  final(): Buffer {
    if (this.pending.length === 0) return NO_BYTES;
    const ks = this.ecb.update(this.prev);
    const out = Buffer.from(this.pending);
    xorInto(out, ks.subarray(0, out.length));
    return out;
  }

  /** Whole blocks: the first with the keystream of the last block before them, the rest with their own. */
  private blocks(c: Buffer, out: Buffer[]): void {
    const first = this.ecb.update(this.prev);
    xorInto(first, c.subarray(0, 16));
    out.push(first);
    if (c.length > 16) {
      const rest = this.ecb.update(c.subarray(0, c.length - 16));
      xorInto(rest, this.aligned(c.subarray(16)));
      out.push(rest);
    }
    this.prev = Buffer.from(c.subarray(c.length - 16));
  }

  /** `c` itself when it is 8-byte aligned, else its copy in the scratch buffer. */
  private aligned(c: Buffer): Buffer {
    if (c.byteOffset % 8 === 0) return c;
    // grown in steps of 64 KiB: a config's few kilobytes do not cost a megabyte
    if (this.scratch.length < c.length) this.scratch = Buffer.alloc(Math.ceil(c.length / 65536) * 65536);
    c.copy(this.scratch);
    return this.scratch.subarray(0, c.length);
  }
}

/**
 * out ^= x: in 64-bit words where both are 8-byte aligned (V8 compiles BigUint64Array xors to
 * machine words; see docs/trust.md for what it saves), the tail and anything unaligned byte by byte.
 */
function xorInto(out: Buffer, x: Buffer): void {
  const n = out.length;
  let i = 0;
  if (out.byteOffset % 8 === 0 && x.byteOffset % 8 === 0) {
    const words = Math.floor(n / 8);
    const a = new BigUint64Array(out.buffer, out.byteOffset, words);
    const b = new BigUint64Array(x.buffer, x.byteOffset, words);
    for (let w = 0; w < words; w++) a[w]! ^= b[w]!;
    i = words * 8;
  }
  for (; i < n; i++) out[i]! ^= x[i]!;
}

/** Splits a message into its session-key packets and a reader positioned at the SEIPD body. */
export async function openMessage(input: Readable, what: string): Promise<{ pkesk: Buffer; reader: ByteReader; seipd: Header }> {
  const r = new ByteReader(input[Symbol.asyncIterator]() as AsyncIterator<Buffer>, what);
  const keys: Buffer[] = [];
  for (;;) {
    const h = await readHeader(r);
    if (!h) throw new TarportError('INTEGRITY', `${what}: an OpenPGP message without encrypted data`);
    if (h.tag === 1 || h.tag === 3) {
      if (h.len.kind !== 'definite' || h.len.n > 65536) throw new TarportError('INTEGRITY', `${what}: malformed session key packet`);
      keys.push(h.raw, await r.exact(h.len.n, 'a session key packet'));
      continue;
    }
    if (h.tag === 18) return { pkesk: Buffer.concat(keys), reader: r, seipd: h };
    if (h.tag === 20) throw new TarportError('INTEGRITY', `${what}: AEAD-encrypted OpenPGP data (OCB/EAX) is not supported; encrypt with gpg 2.2 defaults or tarport`);
    throw new TarportError('INTEGRITY', `${what}: unexpected OpenPGP packet (tag ${h.tag}) before the encrypted data`);
  }
}

/**
 * The one outcome of every failed integrity check on decrypted data: a wrong quick check, a wrong or
 * missing MDC. RFC 4880 §14 (and RFC 9580 §13.4): a quick check that answers differently from the
 * MDC is an oracle; so it answers the same, at the same time (after the whole message), and no
 * message shows a decrypted byte.
 */
export function modified(what: string): TarportError {
  return new TarportError('DIGEST_MISMATCH', `${what}: the encrypted message was changed or damaged (OpenPGP modification detection failed)`, { retryable: false });
}

const MDC_HEADER = Buffer.from([0xd3, 0x14]); // MDC packet, new format, 20 bytes
const MDC_PACKET = 22;

/**
 * The decrypted bytes of a SEIPDv1 packet, between the random prefix and the MDC packet, in order;
 * the verdict (quick check and MDC, in constant time) comes with the end. Reads are serialized, so
 * that whoever drains the rest after a fault in the content waits for a read in flight.
 */
class Plaintext implements AsyncIterable<Buffer> {
  private readonly body: BodyParser;
  private readonly decipher: CfbDecipher;
  private readonly mdc: Hash = createHash('sha1');
  private version = -1;
  private prefix: Buffer | undefined = Buffer.alloc(0);
  private quickOk = true;
  private hold: Buffer = Buffer.alloc(0);
  private readonly ready: Buffer[] = [];
  private ended = false;
  private failure: { error: unknown } | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly input: ByteReader,
    len: Len,
    cipher: string,
    key: Buffer,
    private readonly what: string,
  ) {
    this.body = new BodyParser(len, what);
    this.decipher = new CfbDecipher(cipher, key);
  }

  /** The next decrypted piece, undefined once the whole message is read and its MDC verified. */
  next(): Promise<Buffer | undefined> {
    const p = this.tail.then(() => this.step());
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** Reads the rest of the message for its verdict: throws what `next` would. */
  async drain(): Promise<void> {
    while ((await this.next()) !== undefined);
  }

  /** Ending a loop over it does not close it: a fault in the content still drains for the verdict. */
  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return { next: async () => {
      const value = await this.next();
      return value === undefined ? { done: true, value: undefined } : { done: false, value };
    } };
  }

  private async step(): Promise<Buffer | undefined> {
    if (this.failure) throw this.failure.error;
    try {
      for (;;) {
        const b = this.ready.shift();
        if (b) return b;
        if (this.ended) return undefined;
        await this.advance();
      }
    } catch (e) {
      this.failure = { error: e };
      throw e;
    }
  }

  private async advance(): Promise<void> {
    const raw = await this.input.some(1 << 20);
    if (!raw) return this.finish();
    const pieces: Buffer[] = [];
    const used = this.body.push(raw, pieces);
    for (const p of pieces) this.decrypt(p);
    if (!this.body.done) return;
    if (used < raw.length || !(await this.input.atEnd())) throw new TarportError('INTEGRITY', `${this.what}: data after the end of the encrypted OpenPGP packet`);
    this.finish();
  }

  private decrypt(p: Buffer): void {
    if (this.version < 0) {
      this.version = p[0]!;
      if (this.version !== 1) throw new TarportError('INTEGRITY', `${this.what}: SEIPD version ${this.version} is not supported`);
      p = p.subarray(1);
    }
    for (const d of this.decipher.update(p)) this.take(d);
  }

  private take(d: Buffer): void {
    if (this.prefix) {
      // the 16 random bytes and the two that repeat their last two (the quick check)
      const buf = Buffer.concat([this.prefix, d]);
      if (buf.length < 18) {
        this.prefix = buf;
        return;
      }
      this.quickOk = buf[14] === buf[16] && buf[15] === buf[17];
      this.mdc.update(buf.subarray(0, 18));
      this.prefix = undefined;
      d = buf.subarray(18);
    }
    // the last 22 bytes (the MDC packet) are held back until the end
    if (d.length >= MDC_PACKET) {
      this.emit(this.hold);
      this.emit(d.subarray(0, d.length - MDC_PACKET));
      this.hold = Buffer.from(d.subarray(d.length - MDC_PACKET));
      return;
    }
    const all = Buffer.concat([this.hold, d]);
    const cut = Math.max(0, all.length - MDC_PACKET);
    this.emit(all.subarray(0, cut));
    this.hold = all.subarray(cut);
  }

  private emit(b: Buffer): void {
    if (b.length === 0) return;
    this.mdc.update(b);
    if (this.quickOk) this.ready.push(b);
  }

  private finish(): void {
    const pieces: Buffer[] = [];
    this.body.end(pieces, this.what);
    for (const p of pieces) this.decrypt(p);
    this.take(this.decipher.final());
    // the hash covers the MDC packet's own header: hash the header it must have, compare all 22
    const expected = Buffer.concat([MDC_HEADER, this.mdc.update(MDC_HEADER).digest()]);
    const match = this.hold.length === MDC_PACKET && timingSafeEqual(this.hold, expected);
    if (!this.quickOk || this.prefix || !match) throw modified(this.what);
    this.ended = true;
  }
}

/** Packets that may stand beside the literal data (signatures, markers, padding): read, not used. */
const IGNORED = new Set([2, 4, 10, 21]);

/**
 * What the packets of decrypted (depth 0) or inflated (depth 1) data hold: exactly one literal data
 * packet, or at depth 0 exactly one compressed packet. Literal data and compressed bytes queue up
 * for the reader; literal data beyond `max` bytes is refused (a decompression bomb).
 */
class ContentSink implements PacketSink {
  readonly literal: Buffer[] = [];
  readonly compressed: Buffer[] = [];
  algorithm: number | undefined;
  private tag = -1;
  private contents = 0;
  private skip = -1; // literal header bytes still to skip; -1: not yet known
  private head: number[] = [];
  private bytes = 0;

  constructor(
    private readonly depth: number,
    private readonly max: number,
    private readonly what: string,
  ) {}

  packet(tag: number): void {
    this.tag = tag;
    if (tag === 11 || (tag === 8 && this.depth === 0)) {
      if (++this.contents > 1) throw new TarportError('INTEGRITY', `${this.what}: the encrypted message holds more than one content packet`);
      this.skip = -1;
      this.head = [];
      return;
    }
    if (tag === 8) throw new TarportError('INTEGRITY', `${this.what}: the encrypted message nests compressed data`);
    if (!IGNORED.has(tag)) throw new TarportError('INTEGRITY', `${this.what}: the encrypted message holds an OpenPGP packet other than literal or compressed data`);
  }

  data(piece: Buffer): void {
    if (this.tag === 11) return this.literalData(piece);
    if (this.tag !== 8) return;
    if (this.algorithm === undefined) {
      this.algorithm = piece[0]!;
      if (this.algorithm !== 1 && this.algorithm !== 2) throw new TarportError('INTEGRITY', `${this.what}: the encrypted message is compressed with an algorithm other than ZIP or ZLIB`);
      piece = piece.subarray(1);
    }
    if (piece.length > 0) this.compressed.push(piece);
  }

  close(): void {
    if (this.tag === 11 && this.skip !== 0) throw new TarportError('INTEGRITY', `${this.what}: the literal data packet ends inside its header`);
    if (this.tag === 8 && this.algorithm === undefined) throw new TarportError('INTEGRITY', `${this.what}: an empty compressed packet`);
    this.tag = -1;
  }

  /** The data ended: there must have been content. */
  finish(): void {
    if (this.tag !== -1) throw new TarportError('INTEGRITY', `${this.what}: the OpenPGP message is cut short`);
    if (this.contents === 0) throw new TarportError('INTEGRITY', `${this.what}: the encrypted message holds no literal data`);
  }

  // literal header: format, file name length, file name, date (RFC 4880 §5.9)
  private literalData(piece: Buffer): void {
    while (this.skip < 0 && piece.length > 0) {
      this.head.push(piece[0]!);
      piece = piece.subarray(1);
      if (this.head.length === 2) this.skip = this.head[1]! + 4;
    }
    if (this.skip > 0) {
      const k = Math.min(this.skip, piece.length);
      this.skip -= k;
      piece = piece.subarray(k);
    }
    if (piece.length === 0) return;
    this.bytes += piece.length;
    if (this.bytes > this.max) throw new TarportError('INTEGRITY', `${this.what}: decrypts to more than the ${this.max} bytes allowed`);
    this.literal.push(piece);
  }
}

/** What depth 0 holds, literal or (through `inflated`) compressed. */
async function* contentOf(pt: Plaintext, what: string, max: number): AsyncGenerator<Buffer> {
  const sink = new ContentSink(0, max, what);
  const packets = new PacketStream(sink, what);
  for (let b = await pt.next(); b; b = await pt.next()) {
    packets.push(b);
    yield* sink.literal.splice(0);
    if (sink.algorithm !== undefined) return yield* inflated(pt, packets, sink, what, max);
  }
  packets.end();
  // a compressed packet of indeterminate length (gpg's) is whole only now
  if (sink.algorithm !== undefined) return yield* inflated(pt, packets, sink, what, max);
  sink.finish();
  yield* sink.literal.splice(0);
}

/** Room for packet headers and ignored packets beside the literal data, in inflated bytes. */
const INFLATE_SLACK = 1 << 20;

/**
 * The literal data inside a compressed packet (gpg's default). The inflater must consume every
 * compressed byte (zlib stops at the end of its stream and would ignore what follows), and yields
 * at most `max` bytes plus some slack: the literal data is capped again at `max`.
 */
async function* inflated(pt: Plaintext, packets: PacketStream, top: ContentSink, what: string, max: number): AsyncGenerator<Buffer> {
  const inflate = top.algorithm === 1 ? createInflateRaw() : createInflate();
  let fed = 0;
  const src = Readable.from(
    (async function* () {
      for (;;) {
        for (const c of top.compressed.splice(0)) {
          fed += c.length;
          yield c;
        }
        const b = await pt.next();
        if (!b) break;
        packets.push(b);
      }
      packets.end();
      top.finish();
      for (const c of top.compressed.splice(0)) {
        fed += c.length;
        yield c;
      }
    })(),
    { objectMode: false },
  );
  src.on('error', (e) => inflate.destroy(e));
  src.pipe(inflate);
  try {
    yield* inflatedLiteral(inflate, () => fed, what, max);
  } catch (e) {
    // zlib's own errors (a damaged deflate stream) in our terms; the verdict still comes first
    throw e instanceof TarportError ? e : new TarportError('INTEGRITY', `${what}: the compressed data inside the encrypted message is damaged`, { cause: e });
  } finally {
    src.destroy();
    inflate.destroy();
  }
}

/** The literal data among the inflated packets; the inflater must have taken all `fed()` bytes. */
async function* inflatedLiteral(inflate: Inflate | InflateRaw, fed: () => number, what: string, max: number): AsyncGenerator<Buffer> {
  const sink = new ContentSink(1, max, what);
  const inner = new PacketStream(sink, what);
  let out = 0;
  // the inflater stays open when its output ends: it must still take the rest of its input
  for await (const c of inflate.iterator({ destroyOnReturn: false })) {
    out += (c as Buffer).length;
    if (out > max + INFLATE_SLACK) throw new TarportError('INTEGRITY', `${what}: decompresses to more than the ${max} bytes allowed`);
    inner.push(c as Buffer);
    yield* sink.literal.splice(0);
  }
  // the inflater's output ended: wait until it has been given (and has taken) every byte
  await finished(inflate);
  if (inflate.bytesWritten !== fed()) throw new TarportError('INTEGRITY', `${what}: data after the end of the compressed stream`);
  inner.end();
  sink.finish();
  yield* sink.literal.splice(0);
}

/**
 * The literal data, released so that no reader sees all of it before the verdict: the last piece is
 * held back until the whole message is read and its MDC verified, and the stream ends only then. A
 * fault in the content (a packet we do not read, a bomb, bytes after the deflate stream) waits for
 * the verdict too: a changed message is reported as changed, whatever its content says.
 */
async function* verified(pt: Plaintext, what: string, max: number): AsyncGenerator<Buffer> {
  let held: Buffer | undefined;
  try {
    for await (const b of contentOf(pt, what, max)) {
      if (held) yield held;
      held = b;
    }
    await pt.drain();
  } catch (e) {
    await pt.drain();
    throw e;
  }
  if (held) yield held;
}

/**
 * Decrypts the SEIPDv1 body with the session key and yields the literal data (inflating ZIP and ZLIB
 * compressed packets, gpg's defaults), at most `maxBytes` of it. The stream ends only after the
 * whole message was read and its MDC verified, and holds its last bytes until then; any failure
 * fails the stream instead.
 */
export function decryptSeipd(reader: ByteReader, seipd: Header, session: { data: Uint8Array; algorithm: string | null }, what: string, maxBytes: number): Readable {
  const spec = SYMMETRIC[session.algorithm ?? ''];
  if (!spec || session.data.length !== spec.bytes) throw new TarportError('INTEGRITY', `${what}: session key algorithm ${session.algorithm} is not supported (AES only)`);
  const pt = new Plaintext(reader, seipd.len, spec.cipher, Buffer.from(session.data), what);
  return Readable.from(verified(pt, what, maxBytes), { objectMode: false, highWaterMark: CHUNK });
}
