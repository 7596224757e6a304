import { createCipheriv, randomBytes } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { decryptStream, encryptStream, generateKeyPair, loadDecryptionKey, loadRecipients, type DecryptionKey } from '../../src/crypto/index.js';
import { CfbDecipher } from '../../src/crypto/seipd.js';
import { TarportError } from '../../src/errors.js';
import { tempDir } from '../helpers.js';
import { compressed, flipBlock2, forge, injectedCompressedLiteral, literal, literalToEnd, packet } from '../forge.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

async function collect(s: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

async function keyFiles() {
  const dir = await tempDir();
  const pair = await generateKeyPair('unit <u@example.invalid>', { type: 'ecc' });
  await writeFile(join(dir, 'pub'), pair.publicKey);
  await writeFile(join(dir, 'sec'), pair.privateKey);
  return { publicKey: pair.publicKey, recipients: await loadRecipients([join(dir, 'pub')]), key: await loadDecryptionKey(join(dir, 'sec')) };
}

const LIMIT = { maxBytes: 1 << 30 };

async function open(message: Buffer, key: DecryptionKey, limits = LIMIT): Promise<Buffer> {
  return collect(await decryptStream(Readable.from([message]), key, 'test', limits));
}

/** The error a decryption ends with (fails the test if it succeeds). */
async function refusal(message: Buffer, key: DecryptionKey, limits = LIMIT): Promise<TarportError> {
  try {
    await open(message, key, limits);
  } catch (e) {
    expect(e).toBeInstanceOf(TarportError);
    return e as TarportError;
  }
  throw new Error('the forged message was accepted');
}

const MODIFIED = 'test: the encrypted message was changed or damaged (OpenPGP modification detection failed)';

describe('OpenPGP streaming encryption (SEIPD v1 over node:crypto)', () => {
  // each row: a size that exercises a framing case
  it.each([
    [0, 'empty'],
    [1, 'one byte'],
    [21, 'shorter than the MDC'],
    [(1 << 20) - 6, 'literal body exactly one partial chunk'],
    [(3 << 20) + 12345, 'several partial chunks and a remainder'],
  ])('round-trips %i bytes (%s), fed in odd chunk sizes', async (size) => {
    const { recipients, key } = await keyFiles();
    const data = randomBytes(size);
    const chunks: Buffer[] = [];
    for (let i = 0; i < data.length; i += 70_001) chunks.push(data.subarray(i, i + 70_001));
    const sealed = await collect(await encryptStream(Readable.from(chunks), recipients));
    const odd: Buffer[] = [];
    for (let i = 0; i < sealed.length; i += 7_777) odd.push(sealed.subarray(i, i + 7_777));
    const opened = await collect(await decryptStream(Readable.from(odd), key, 'test', LIMIT));
    expect(opened.equals(data)).toBe(true);
  });

  it('decrypts the same plaintext whatever the ciphertext pieces\' sizes and their alignment in memory', async () => {
    const { recipients, key } = await keyFiles();
    const data = randomBytes(200_003);
    const sealed = await collect(await encryptStream(Readable.from([data]), recipients));
    // chunks of a few bytes (the packet parser gathers them into 64 KiB pieces) and long ones (passed
    // on as views), each at several offsets from an 8-byte boundary
    for (const size of [1, 15, 16, 17, 4099, 1 << 20]) {
      for (const shift of [0, 1, 4, 7]) {
        const room = Buffer.alloc(sealed.length + 8);
        sealed.copy(room, shift);
        const at = room.subarray(shift, shift + sealed.length);
        const pieces: Buffer[] = [];
        for (let i = 0; i < at.length; i += size) pieces.push(at.subarray(i, i + size));
        const opened = await collect(await decryptStream(Readable.from(pieces), key, 'test', LIMIT));
        expect(opened.equals(data), `pieces of ${size} bytes at offset ${shift}`).toBe(true);
      }
    }
  });

  it('detects a changed byte (MDC), and a cut message', async () => {
    const { recipients, key } = await keyFiles();
    const sealed = await collect(await encryptStream(Readable.from([randomBytes(200_000)]), recipients));
    const changed = Buffer.from(sealed);
    changed[changed.length - 100]! ^= 1;
    expect((await refusal(changed, key)).message).toBe(MODIFIED);
    expect((await refusal(sealed.subarray(0, sealed.length - 50), key)).message).toMatch(/cut short/);
  });

  it('refuses a key it was not encrypted to', async () => {
    const a = await keyFiles();
    const b = await keyFiles();
    const sealed = await collect(await encryptStream(Readable.from([Buffer.from('secret')]), a.recipients));
    await expect(decryptStream(Readable.from([sealed]), b.key, 'test', LIMIT)).rejects.toThrow(/cannot decrypt/);
  });

  it('gives no reader all of the plaintext before the MDC is verified', async () => {
    const { recipients, key } = await keyFiles();
    const data = randomBytes(3 << 20);
    const sealed = await collect(await encryptStream(Readable.from([data]), recipients));
    sealed[sealed.length - 1]! ^= 1; // the last byte of the MDC
    let seen = 0;
    const s = await decryptStream(Readable.from([sealed]), key, 'test', LIMIT);
    await expect(
      (async () => {
        for await (const c of s) seen += (c as Buffer).length;
      })(),
    ).rejects.toThrow(MODIFIED);
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThan(data.length);
  });
});

describe('CfbDecipher: CFB through ECB, against OpenSSL\'s own CFB', () => {
  /** Pieces of the sizes `sizes` cycles through, each copied to an offset 0-7 from an 8-byte boundary. */
  function decipherInPieces(cipher: Buffer, key: Buffer, sizes: readonly number[]): Buffer {
    const d = new CfbDecipher('aes-256-cfb', key);
    const out: Buffer[] = [];
    for (let i = 0, k = 0; i < cipher.length; k++) {
      const size = sizes[k % sizes.length]!;
      const room = Buffer.alloc(size + 8);
      const piece = room.subarray(k % 8, (k % 8) + size);
      cipher.copy(piece, 0, i, i + size);
      out.push(...d.update(piece.subarray(0, Math.min(size, cipher.length - i))));
      i += size;
    }
    out.push(d.final());
    return Buffer.concat(out);
  }

  it.each([
    ['0 to 40 bytes (blocks split over several pieces, empty pieces)', Array.from({ length: 41 }, (_, i) => (i * 17) % 41)],
    ['whole blocks and odd lengths past them', [16, 32, 33, 47, 4099]],
    ['long pieces', [65_536 + 5, 300_001]],
  ])('decrypts pieces of %s at every alignment as OpenSSL\'s CFB does', (_name, sizes) => {
    const key = randomBytes(32);
    const data = randomBytes(700_003);
    // OpenPGP's CFB: a zero IV (the random prefix stands in for one)
    const enc = createCipheriv('aes-256-cfb', key, Buffer.alloc(16));
    const cipher = Buffer.concat([enc.update(data), enc.final()]);
    const opened = decipherInPieces(cipher, key, sizes);
    expect(opened.length).toBe(data.length);
    expect(opened.equals(data)).toBe(true);
  });
});

describe('forged messages: 0 accepted', () => {
  it('compressed content with a wrong MDC, definite framing: refused as modified', async () => {
    const { publicKey, key } = await keyFiles();
    const inner = compressed(literal(Buffer.from('attacker content')), { framing: 'definite' });
    expect((await open(await forge(publicKey, inner), key)).toString()).toBe('attacker content'); // the control: a good MDC opens
    const e = await refusal(await forge(publicKey, inner, { mdc: 'wrong' }), key);
    expect(e.code).toBe('DIGEST_MISMATCH');
    expect(e.message).toBe(MODIFIED);
  });

  it.each([1, 2] as const)('compressed content (algorithm %i) with a wrong MDC, indefinite framing as gpg writes it: refused as modified', async (algorithm) => {
    const { publicKey, key } = await keyFiles();
    const inner = compressed(literalToEnd(Buffer.from('attacker content')), { framing: 'indefinite', algorithm });
    expect((await open(await forge(publicKey, inner), key)).toString()).toBe('attacker content');
    expect((await refusal(await forge(publicKey, inner, { mdc: 'wrong' }), key)).message).toBe(MODIFIED);
  });

  it('bytes after the end of the deflate stream: refused, with a good MDC as with a wrong one', async () => {
    const { publicKey, key } = await keyFiles();
    const inner = compressed(literalToEnd(Buffer.from('attacker content')), { framing: 'indefinite', trailing: Buffer.from('garbage the inflater never reads') });
    expect((await refusal(await forge(publicKey, inner), key)).message).toBe('test: data after the end of the compressed stream');
    expect((await refusal(await forge(publicKey, inner, { mdc: 'wrong' }), key)).message).toBe(MODIFIED);
    const definite = compressed(literal(Buffer.from('attacker content')), { trailing: Buffer.from([0]) });
    expect((await refusal(await forge(publicKey, definite), key)).message).toBe('test: data after the end of the compressed stream');
  });

  it('a damaged deflate stream: refused as damaged with a good MDC, as modified with a wrong one', async () => {
    const { publicKey, key } = await keyFiles();
    const good = compressed(literalToEnd(randomBytes(5000)), { framing: 'indefinite' });
    const damaged = Buffer.concat([good.subarray(0, 2), Buffer.from([0xff, 0xff, 0xff]), good.subarray(5)]);
    const e = await refusal(await forge(publicKey, damaged), key);
    expect([e.code, e.message]).toEqual(['INTEGRITY', 'test: the compressed data inside the encrypted message is damaged']);
    expect((await refusal(await forge(publicKey, damaged, { mdc: 'wrong' }), key)).message).toBe(MODIFIED);
    const cut = good.subarray(0, good.length - 100);
    expect((await refusal(await forge(publicKey, cut), key)).message).toBe('test: the compressed data inside the encrypted message is damaged');
  });

  it('no MDC packet at all, and content that is not literal data: refused as modified unless the MDC holds', async () => {
    const { publicKey, key } = await keyFiles();
    expect((await refusal(await forge(publicKey, literal(Buffer.from('x')), { mdc: 'none' }), key)).message).toBe(MODIFIED);
    const userId = packet(13, Buffer.from('not content'));
    expect((await refusal(await forge(publicKey, userId, { mdc: 'wrong' }), key)).message).toBe(MODIFIED);
    expect((await refusal(await forge(publicKey, userId), key)).message).toMatch(/other than literal or compressed data/);
    const two = Buffer.concat([literal(Buffer.from('a')), literal(Buffer.from('b'))]);
    expect((await refusal(await forge(publicKey, two), key)).message).toMatch(/more than one content packet/);
  });

  it('a bit-flipped block 2 of a real message (CFB malleability, no key): refused as modified', async () => {
    const { recipients, key } = await keyFiles();
    // a zstd layer: the attacker knows tarport's literal header and the zstd magic
    const data = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(100_000)]);
    const sealed = await collect(await encryptStream(Readable.from([data]), recipients));
    const known = Buffer.concat([Buffer.from([0xcb]), encodedLength(data.length + 6), Buffer.from([0x62, 0, 0, 0, 0, 0]), data]).subarray(0, 14);
    const forged = flipBlock2(sealed, known, injectedCompressedLiteral());
    const e = await refusal(forged, key);
    expect(e.code).toBe('DIGEST_MISMATCH');
    expect(e.message).toBe(MODIFIED);
    // what a decryptor that skips the MDC would return: the attacker's literal packet
    const injected = injectedCompressedLiteral();
    expect(inflateRawSync(injected.subarray(2)).subarray(8).toString()).toBe('A');
  });

  it('a quick-check failure and an MDC failure give one error, code and message alike', async () => {
    const { recipients, key } = await keyFiles();
    const sealed = await collect(await encryptStream(Readable.from([randomBytes(50_000)]), recipients));
    const { ciphertextOffset } = await import('../forge.js');
    const quick = Buffer.from(sealed);
    quick[ciphertextOffset(sealed) + 15]! ^= 1; // the second quick-check byte's source
    const mdc = Buffer.from(sealed);
    mdc[mdc.length - 3]! ^= 1;
    const a = await refusal(quick, key);
    const b = await refusal(mdc, key);
    expect([a.code, a.message, a.retryable]).toEqual([b.code, b.message, b.retryable]);
    expect(a.message).toBe(MODIFIED);
  });

  it('a plain object where an encrypted one belongs, and a message cut in a packet header: refused naming the object', async () => {
    const { recipients, key } = await keyFiles();
    expect((await refusal(Buffer.from('{"plain": "json"}'), key)).message).toBe('test: not an OpenPGP message (bad packet header)');
    const sealed = await collect(await encryptStream(Readable.from([Buffer.from('secret')]), recipients));
    // the first packet's header (new format: tag byte, then a length of 1, 2 or 5 bytes) cut after its tag byte
    expect((await refusal(sealed.subarray(0, 1), key)).message).toBe('test: the OpenPGP message ends inside a packet length');
  });

  it('data after the SEIPD packet: refused', async () => {
    const { publicKey, key } = await keyFiles();
    const e = await refusal(await forge(publicKey, literal(Buffer.from('x')), { after: Buffer.from('appended') }), key);
    expect(e.message).toBe('test: data after the end of the encrypted OpenPGP packet');
    const partial = await forge(publicKey, literal(randomBytes(5000)), { partial: [1024, 512], after: Buffer.from([0]) });
    expect((await refusal(partial, key)).message).toBe('test: data after the end of the encrypted OpenPGP packet');
  });

  it('a first partial length under 512 bytes: refused; 1-byte partial lengths after it: read', async () => {
    const { publicKey, key } = await keyFiles();
    const data = randomBytes(20_000);
    expect((await refusal(await forge(publicKey, literal(data), { partial: [256, 256] }), key)).message).toMatch(/first partial body length is under the 512 bytes/);
    expect((await open(await forge(publicKey, literal(data), { partial: [512, 1] }), key)).equals(data)).toBe(true);
  });

  it('a compression bomb is refused at the cap, with a good MDC', async () => {
    const { publicKey, key } = await keyFiles();
    const bomb = compressed(literalToEnd(Buffer.alloc(16 << 20)), { framing: 'indefinite' });
    expect(bomb.length).toBeLessThan(20_000);
    const e = await refusal(await forge(publicKey, bomb), key, { maxBytes: 1 << 20 });
    expect(e.message).toBe('test: decrypts to more than the 1048576 bytes allowed');
    expect(e.code).toBe('INTEGRITY');
    // a plain message past the cap, likewise
    expect((await refusal(await forge(publicKey, literal(randomBytes(2000))), key, { maxBytes: 1000 })).message).toBe('test: decrypts to more than the 1000 bytes allowed');
  });
});

function encodedLength(n: number): Buffer {
  if (n < 192) return Buffer.from([n]);
  if (n < 8384) return Buffer.from([((n - 192) >> 8) + 192, (n - 192) & 0xff]);
  if (n >= 1 << 20) return Buffer.from([0xe0 | 20]);
  const b = Buffer.alloc(5);
  b[0] = 0xff;
  b.writeUInt32BE(n, 1);
  return b;
}
