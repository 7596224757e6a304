import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type Duplex } from 'node:stream';
import { finished } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decompressor } from '../../src/archive/index.js';
import { checkEncrypted, decryptConfig, MAX_CONFIG_BYTES, openLayer, unauthenticatedWarning } from '../../src/consumer/encryption.js';
import { encryptStream, generateKeyPair, loadDecryptionKey, loadRecipients } from '../../src/crypto/index.js';
import type { LayerDescriptor, ReleaseRecord } from '../../src/repo/index.js';
import { compressed, forge, literalToEnd } from '../forge.js';
import { tempDir } from '../helpers.js';

async function keys() {
  const dir = await tempDir();
  const pair = await generateKeyPair('unit <u@example.invalid>', { type: 'ecc' });
  await writeFile(join(dir, 'pub'), pair.publicKey);
  await writeFile(join(dir, 'sec'), pair.privateKey);
  return { publicKey: pair.publicKey, recipients: await loadRecipients([join(dir, 'pub')]), key: await loadDecryptionKey(join(dir, 'sec')) };
}

async function collect(s: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

const D = `sha256:${'a'.repeat(64)}`;
const ENC = { scheme: 'openpgp' as const, recipients: ['F'] };

function layer(extra: Partial<LayerDescriptor> = {}): LayerDescriptor {
  return { mediaType: 'x', digest: D, size: 1, diffId: D, uncompressedSize: 1 << 20, compression: 'none', ...extra };
}

function record(layers: LayerDescriptor[], configEncrypted: boolean): ReleaseRecord {
  return {
    schema: 'tarport.release/v1', name: 'app', tag: '1', version: 3, created: '', kind: 'image', contentKey: D,
    config: { mediaType: 'c', digest: D, size: 1, ...(configEncrypted ? { encryption: ENC } : {}) },
    layers, producer: { tool: 'tarport', version: '0' },
  };
}

/** A decompressor that ends its output after `n` bytes but goes on taking input (as zlib does at the end of its stream). */
function endsEarly(n: number): Duplex {
  let seen = 0;
  let ended = false;
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      if (!ended) {
        const take = chunk.subarray(0, Math.max(0, n - seen));
        seen += chunk.length;
        if (take.length) this.push(take);
        if (seen >= n) {
          ended = true;
          this.push(null);
        }
      }
      cb();
    },
  });
}

describe('consumer encryption policy', () => {
  it('with --decrypt-key, a release with an unencrypted layer or config is refused (UNTRUSTED), naming each; --allow-unencrypted and no key let it pass', () => {
    const mixed = record([layer({ encryption: ENC }), layer({ diffId: `sha256:${'b'.repeat(64)}` })], false);
    expect(() => checkEncrypted(mixed, { decryptKey: {} })).toThrow(`app:1 v3: its config ${D}, layer sha256:${'b'.repeat(64)} are not encrypted, and --decrypt-key expects encrypted releases`);
    const refusal = (() => {
      try {
        checkEncrypted(mixed, { decryptKey: {} });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect((refusal as { code?: string } | undefined)?.code).toBe('UNTRUSTED');
    expect(() => checkEncrypted(mixed, { decryptKey: {}, allowUnencrypted: true })).not.toThrow();
    expect(() => checkEncrypted(mixed, {})).not.toThrow();
    expect(() => checkEncrypted(record([layer({ encryption: ENC })], true), { decryptKey: {} })).not.toThrow();
  });

  it('a multi-platform release whose platform lists a plain layer (its top-level list all encrypted) is refused too: that is what loads', () => {
    const plainDiff = `sha256:${'c'.repeat(64)}`;
    const platform = (layers: LayerDescriptor[]) => ({ platform: { os: 'linux', architecture: 'amd64' }, contentKey: D, config: { mediaType: 'c', digest: D, size: 1, encryption: ENC }, layers });
    const index = (layers: LayerDescriptor[]): ReleaseRecord => ({
      ...record([layer({ encryption: ENC })], true),
      schema: 'tarport.release/v2',
      config: undefined,
      index: { mediaType: 'application/vnd.oci.image.index.v1+json', platforms: [platform(layers)], artifacts: [], absent: [] },
    }) as unknown as ReleaseRecord;
    expect(() => checkEncrypted(index([layer({ diffId: plainDiff })]), { decryptKey: {} })).toThrow(`app:1 v3: layer ${plainDiff} is not encrypted, and --decrypt-key expects encrypted releases`);
    expect(() => checkEncrypted(index([layer({ encryption: ENC })]), { decryptKey: {} })).not.toThrow();
  });

  it('warns when releases are decrypted but not authenticated, not when a key is pinned', () => {
    expect(unauthenticatedWarning({ decryptKey: {} })).toMatch(/^--decrypt-key without --trust: releases are NOT authenticated/);
    expect(unauthenticatedWarning({ decryptKey: {}, trust: [{}] })).toBeUndefined();
    expect(unauthenticatedWarning({})).toBeUndefined();
  });
});

describe('decrypted objects reach the load only after the verdict', () => {
  it('a decompressor that ends early cannot end the layer before a failing MDC: the layer fails', async () => {
    const { recipients, key } = await keys();
    const data = randomBytes(3 << 20);
    const sealed = await collect(await encryptStream(Readable.from([data]), recipients));
    const l = layer({ encryption: ENC, uncompressedSize: data.length });
    // the control: a good message through the same decompressor ends cleanly
    const good = await collect(await openLayer(Readable.from([sealed]), l, key, 'layer', async () => endsEarly(1 << 20)));
    expect(good.length).toBe(1 << 20);
    const bad = Buffer.from(sealed);
    bad[bad.length - 1]! ^= 1;
    await expect(collect(await openLayer(Readable.from([bad]), l, key, 'layer', async () => endsEarly(1 << 20)))).rejects.toThrow('layer: the encrypted message was changed or damaged');
  });

  it('a layer that decompresses past its declared size is refused as it streams', async () => {
    const l = layer({ uncompressedSize: 1000 });
    await expect(collect(await openLayer(Readable.from([randomBytes(5000)]), l, undefined, 'layer x', async () => new Transform({ transform: (c, _e, cb) => cb(null, c) })))).rejects.toThrow(
      'layer x: decompresses to more than the 1000 bytes the record declares',
    );
  });

  it('a plain layer named by its file is read by the feed and decompressed whole, an encrypted one decrypted', async () => {
    const dir = await tempDir();
    const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(2 << 20, 'layer ')]);
    const zfile = join(dir, 'layer.gz');
    await writeFile(zfile, gzipSync(data));
    const gz = layer({ compression: 'gzip', uncompressedSize: data.length });
    expect((await collect(await openLayer({ file: zfile }, gz, undefined, 'layer', async () => decompressor('gzip')))).equals(data)).toBe(true);
    // 'none': a pass-through is not done with a chunk when it calls back, so the file is streamed
    const pfile = join(dir, 'layer.tar');
    await writeFile(pfile, data);
    expect((await collect(await openLayer({ file: pfile }, layer({ uncompressedSize: data.length }), undefined, 'layer', async () => decompressor('none')))).equals(data)).toBe(true);
    const { recipients, key } = await keys();
    const sfile = join(dir, 'layer.gpg');
    await writeFile(sfile, await collect(await encryptStream(Readable.from([data]), recipients)));
    const enc = layer({ encryption: ENC, uncompressedSize: data.length });
    expect((await collect(await openLayer({ file: sfile }, enc, key, 'layer', async () => decompressor('none')))).equals(data)).toBe(true);
    await expect(collect(await openLayer({ file: join(dir, 'absent') }, gz, undefined, 'layer', async () => decompressor('gzip')))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a stored layer that does not decode as its record says is the repository\'s fault (INTEGRITY, naming it), not a bad input file', async () => {
    const dir = await tempDir();
    const file = join(dir, 'layer.zst');
    await writeFile(file, randomBytes(64 << 10)); // digest as recorded (no expect here), bytes no zstd
    const zst = layer({ compression: 'zstd', uncompressedSize: 1 << 20 });
    const e = await collect(await openLayer({ file }, zst, undefined, 'layer sha256:x of app:1 v3', async () => decompressor('zstd'))).catch((x: unknown) => x as { code: string; message: string });
    expect((e as { code: string }).code).toBe('INTEGRITY');
    expect((e as { message: string }).message).toMatch(/^layer sha256:x of app:1 v3: does not decode as its record says \(zstd\): /);
  });

  it('an object read in place and checked on the way: whole when it matches its digest; when not, refused and its last bytes never given', async () => {
    const dir = await tempDir();
    const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(2 << 20, 'layer ')]);
    const file = join(dir, 'layer.gz');
    const stored = gzipSync(data);
    await writeFile(file, stored);
    const gz = layer({ compression: 'gzip', uncompressedSize: data.length });
    const what = 'object sha256:… in file:///repo';
    const right = { digest: `sha256:${createHash('sha256').update(stored).digest('hex')}`, size: stored.length, what };
    expect((await collect(await openLayer({ file, expect: right }, gz, undefined, 'layer', async () => decompressor('gzip')))).equals(data)).toBe(true);
    // the same bytes under another digest: they decompress well, yet the reader never gets the end
    let got = 0;
    const out = await openLayer({ file, expect: { ...right, digest: D } }, gz, undefined, 'layer', async () => decompressor('gzip'));
    out.on('data', (c: Buffer) => (got += c.length));
    await expect(finished(out)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH', message: `${what}: digest mismatch, expected ${D}, got ${right.digest}` });
    expect(got).toBeGreaterThan(0);
    expect(got).toBeLessThan(data.length);
    // more bytes than the record declares: refused before the end
    await expect(collect(await openLayer({ file, expect: { ...right, size: stored.length - 1 } }, gz, undefined, 'layer', async () => decompressor('gzip')))).rejects.toThrow(
      `${what}: more bytes than the ${stored.length - 1} declared`,
    );
  });

  it('a config that inflates past 16 MiB is refused', async () => {
    const { publicKey, key } = await keys();
    const bomb = await forge(publicKey, compressed(literalToEnd(Buffer.alloc(MAX_CONFIG_BYTES + 1)), { framing: 'indefinite' }));
    await expect(decryptConfig(bomb, key, 'config of app:1')).rejects.toThrow(`config of app:1: decrypts to more than the ${MAX_CONFIG_BYTES} bytes allowed`);
    const fine = await forge(publicKey, compressed(literalToEnd(Buffer.from('{"a":1}')), { framing: 'indefinite' }));
    expect((await decryptConfig(fine, key, 'config')).toString()).toBe('{"a":1}');
  });
});
