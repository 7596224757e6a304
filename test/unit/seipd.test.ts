import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { decryptStream, encryptStream, generateKeyPair, loadDecryptionKey, loadRecipients } from '../../src/crypto/index.js';
import { tempDir } from '../helpers.js';
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
  return { recipients: await loadRecipients([join(dir, 'pub')]), key: await loadDecryptionKey(join(dir, 'sec')) };
}

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
    const opened = await collect(await decryptStream(Readable.from(odd), key, 'test'));
    expect(opened.equals(data)).toBe(true);
  });

  it('detects a changed byte (MDC), and a cut message', async () => {
    const { recipients, key } = await keyFiles();
    const sealed = await collect(await encryptStream(Readable.from([randomBytes(200_000)]), recipients));
    const changed = Buffer.from(sealed);
    changed[changed.length - 100]! ^= 1;
    await expect(collect(await decryptStream(Readable.from([changed]), key, 'test'))).rejects.toThrow(/modification detected|no modification detection/);
    await expect(collect(await decryptStream(Readable.from([sealed.subarray(0, sealed.length - 50)]), key, 'test'))).rejects.toThrow(/cut short|modification|no modification/);
  });

  it('refuses a key it was not encrypted to', async () => {
    const a = await keyFiles();
    const b = await keyFiles();
    const sealed = await collect(await encryptStream(Readable.from([Buffer.from('secret')]), a.recipients));
    await expect(decryptStream(Readable.from([sealed]), b.key, 'test')).rejects.toThrow(/cannot decrypt/);
  });
});
