// The bulk of OpenPGP encryption done with node:crypto (RFC 4880 §5.13, Symmetrically Encrypted
// Integrity Protected Data, version 1, with its Modification Detection Code): what gpg 2.2 reads and
// writes. openpgp.js keeps the parts that need an OpenPGP library — keys and the public-key
// encrypted session keys — while AES-CFB and SHA-1 run in OpenSSL at several hundred MB/s
// (openpgp.js's own streaming decryption reaches a third of gpg's speed on this machine).

import { createCipheriv, createHash, randomBytes, type Cipher, type Hash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { createInflate, createInflateRaw } from 'node:zlib';
import { TarportError } from '../errors.js';

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

/**
 * CFB decryption in parallel: P[i] = C[i] xor E(C[i-1]), and E of every ciphertext block can be
 * computed at once with ECB, which OpenSSL pipelines (several GB/s with AES-NI) where its CFB
 * decryption runs block after block. Encryption has no such shortcut (each block needs the last).
 */
class CfbDecipher {
  private readonly ecb: Cipher;
  private prev: Buffer = Buffer.alloc(16);
  private pending: Buffer = Buffer.alloc(0);

  constructor(algorithm: string, key: Buffer) {
    this.ecb = createCipheriv(algorithm.replace('-cfb', '-ecb'), key, null);
    this.ecb.setAutoPadding(false);
  }

  update(c: Buffer): Buffer {
    const data = this.pending.length ? Buffer.concat([this.pending, c]) : c;
    const n = data.length - (data.length % 16);
    this.pending = Buffer.from(data.subarray(n));
    if (n === 0) return Buffer.alloc(0);
    // the keystream buffer is ours: the plaintext is xored into it, sparing a copy
    const ks = this.ecb.update(Buffer.concat([this.prev, data.subarray(0, n - 16)]));
    this.prev = Buffer.from(data.subarray(n - 16, n));
    xorInto(ks, data.subarray(0, n));
    return ks;
  }

  final(): Buffer {
    if (this.pending.length === 0) return Buffer.alloc(0);
    const ks = this.ecb.update(this.prev);
    const out = Buffer.from(this.pending);
    xorInto(out, ks.subarray(0, out.length));
    return out;
  }
}

function xorInto(out: Buffer, ks: Buffer): void {
  const n = out.length;
  if (out.byteOffset % 4 === 0 && ks.byteOffset % 4 === 0 && n % 4 === 0) {
    const a = new Uint32Array(out.buffer, out.byteOffset, n / 4);
    const b = new Uint32Array(ks.buffer, ks.byteOffset, n / 4);
    for (let i = 0; i < a.length; i++) a[i]! ^= b[i]!;
    return;
  }
  for (let i = 0; i < n; i++) out[i]! ^= ks[i]!;
}

/** Pulls exact byte counts out of an async stream of chunks. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    }
    return this.buf.length >= n;
  }

  async exact(n: number, what: string): Promise<Buffer> {
    if (!(await this.fill(n))) throw new TarportError('INTEGRITY', `OpenPGP message ends inside ${what}`);
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

type Len = { kind: 'definite'; n: number } | { kind: 'partial'; n: number } | { kind: 'rest' };

interface Header {
  tag: number;
  len: Len;
  raw: Buffer;
}

async function readNewLength(r: ByteReader, allowPartial: boolean): Promise<{ len: Len; raw: Buffer }> {
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
  if (!allowPartial) throw new TarportError('INTEGRITY', 'OpenPGP packet with a partial length where none may be');
  return { len: { kind: 'partial', n: 1 << (a & 0x1f) }, raw: Buffer.from([a]) };
}

async function readHeader(r: ByteReader): Promise<Header | undefined> {
  if (await r.atEnd()) return undefined;
  const first = (await r.exact(1, 'a packet header'))[0]!;
  if ((first & 0x80) === 0) throw new TarportError('INTEGRITY', 'not an OpenPGP message (bad packet header)');
  if (first & 0x40) {
    const tag = first & 0x3f;
    const { len, raw } = await readNewLength(r, true);
    return { tag, len, raw: Buffer.concat([Buffer.from([first]), raw]) };
  }
  const tag = (first >> 2) & 0x0f;
  const lt = first & 3;
  if (lt === 3) return { tag, len: { kind: 'rest' }, raw: Buffer.from([first]) };
  const b = await r.exact(1 << lt, 'a packet length');
  const n = lt === 0 ? b[0]! : lt === 1 ? b.readUInt16BE(0) : b.readUInt32BE(0);
  return { tag, len: { kind: 'definite', n }, raw: Buffer.concat([Buffer.from([first]), b]) };
}

/** The body of a packet, following partial lengths. */
async function* bodyOf(r: ByteReader, len: Len, what: string): AsyncGenerator<Buffer> {
  let cur = len;
  for (;;) {
    if (cur.kind === 'rest') {
      for (let b = await r.some(CHUNK); b; b = await r.some(CHUNK)) yield b;
      return;
    }
    let left = cur.n;
    while (left > 0) {
      const b = await r.some(left);
      if (!b) throw new TarportError('INTEGRITY', `${what}: the OpenPGP message is cut short`);
      left -= b.length;
      yield b;
    }
    if (cur.kind === 'definite') return;
    cur = (await readNewLength(r, true)).len;
  }
}

/** Splits a message into its session-key packets and a reader positioned at the SEIPD body. */
export async function openMessage(input: Readable, what: string): Promise<{ pkesk: Buffer; reader: ByteReader; seipd: Header }> {
  const r = new ByteReader(input[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
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
 * Decrypts the SEIPDv1 body with the session key and yields the literal data: the MDC is checked at
 * the very end, and a mismatch fails the stream there (callers never use the plaintext before the
 * stream ended cleanly). Compressed data packets (ZIP, ZLIB: gpg's defaults) are inflated.
 */
export function decryptSeipd(reader: ByteReader, seipd: Header, session: { data: Uint8Array; algorithm: string | null }, what: string): Readable {
  async function* plaintext(): AsyncGenerator<Buffer> {
    const spec = SYMMETRIC[session.algorithm ?? ''];
    if (!spec || session.data.length !== spec.bytes) throw new TarportError('INTEGRITY', `${what}: session key algorithm ${session.algorithm} is not supported (AES only)`);
    const body = bodyOf(reader, seipd.len, what);
    const decipher = new CfbDecipher(spec.cipher, Buffer.from(session.data));
    const mdc = createHash('sha1');
    let prefixSeen = false;
    let version = -1;
    let hold: Buffer = Buffer.alloc(0); // the last 22 bytes (MDC packet) are held back until the end
    const take = function* (p: Buffer): Generator<Buffer> {
      if (p.length === 0) return;
      if (!prefixSeen) {
        const buf: Buffer = hold.length ? Buffer.concat([hold, p]) : p;
        if (buf.length < 18) {
          hold = buf;
          return;
        }
        if (buf[14] !== buf[16] || buf[15] !== buf[17]) throw new TarportError('UNTRUSTED', `${what}: the session key does not fit (quick check failed)`, { retryable: false });
        mdc.update(buf.subarray(0, 18));
        prefixSeen = true;
        hold = Buffer.alloc(0);
        p = buf.subarray(18);
      }
      if (hold.length + p.length <= 22) {
        hold = Buffer.concat([hold, p]);
        return;
      }
      if (p.length < 22) {
        // a small chunk: shift the held bytes
        const all = Buffer.concat([hold, p]);
        const out = all.subarray(0, all.length - 22);
        hold = Buffer.from(all.subarray(all.length - 22));
        mdc.update(out);
        yield out;
        return;
      }
      // the held bytes go out as they are; the new chunk's last 22 bytes are held (no big copy)
      if (hold.length > 0) {
        mdc.update(hold);
        yield hold;
      }
      const out = p.subarray(0, p.length - 22);
      hold = Buffer.from(p.subarray(p.length - 22));
      mdc.update(out);
      yield out;
    };
    for await (const c of body) {
      let chunk = c;
      if (version < 0) {
        version = chunk[0]!;
        if (version !== 1) throw new TarportError('INTEGRITY', `${what}: SEIPD version ${version} is not supported`);
        chunk = chunk.subarray(1);
      }
      yield* take(decipher.update(chunk));
    }
    yield* take(decipher.final());
    if (!prefixSeen || hold.length !== 22 || hold[0] !== 0xd3 || hold[1] !== 0x14) throw new TarportError('DIGEST_MISMATCH', `${what}: the OpenPGP message has no modification detection code`, { retryable: false });
    mdc.update(hold.subarray(0, 2));
    if (!mdc.digest().equals(hold.subarray(2))) throw new TarportError('DIGEST_MISMATCH', `${what}: modification detected: the OpenPGP message was changed`, { retryable: false });
  }
  return Readable.from(literalData(plaintext(), what, 0), { objectMode: false, highWaterMark: CHUNK });
}

/** The data of the literal packet inside decrypted (or inflated) packets. */
async function* literalData(packets: AsyncGenerator<Buffer>, what: string, depth: number): AsyncGenerator<Buffer> {
  const r = new ByteReader(packets);
  const h = await readHeader(r);
  if (!h) throw new TarportError('INTEGRITY', `${what}: empty encrypted message`);
  if (h.tag === 8 && depth === 0) {
    const body = bodyOf(r, h.len, what);
    const first = await body.next();
    if (first.done) throw new TarportError('INTEGRITY', `${what}: empty compressed packet`);
    const algo = first.value[0]!;
    if (algo !== 1 && algo !== 2) throw new TarportError('INTEGRITY', `${what}: compression algorithm ${algo} is not supported (ZIP and ZLIB are)`);
    const inflate = algo === 1 ? createInflateRaw() : createInflate();
    const src = Readable.from(
      (async function* () {
        yield first.value.subarray(1);
        yield* body;
      })(),
    );
    src.on('error', (e) => inflate.destroy(e));
    src.pipe(inflate);
    yield* literalData(inflate[Symbol.asyncIterator]() as AsyncGenerator<Buffer>, what, depth + 1);
    return;
  }
  if (h.tag !== 11) throw new TarportError('INTEGRITY', `${what}: expected literal data, found OpenPGP packet tag ${h.tag}`);
  const body = bodyOf(r, h.len, what);
  // literal header: format, file name length, file name, date
  const lr = new ByteReader(body);
  await lr.exact(1, 'the literal packet');
  const nameLen = (await lr.exact(1, 'the literal packet'))[0]!;
  await lr.exact(nameLen + 4, 'the literal packet');
  for (let b = await lr.some(CHUNK); b; b = await lr.some(CHUNK)) yield b;
  // anything after the literal packet (a signature, say) is read so that the MDC covers it all
  while (!(await r.atEnd())) await r.some(CHUNK);
}
