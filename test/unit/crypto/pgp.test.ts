import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { describe, expect, it } from 'vitest';
import { SIGNER_NOTATION, generateKeyPair, loadDecryptionKey, loadSigningKey, loadTrustedKeys, signDetached, signatureIssuer, signatureUserId, signedBy, verifyDetached } from '../../../src/crypto/pgp.js';
import { tempDir } from '../../helpers.js';

async function signingKey(uid: string) {
  const pair = await generateKeyPair(uid, { type: 'ecc' });
  const file = join(await tempDir('tarport-pgp-'), 'sec.asc');
  await writeFile(file, pair.privateKey);
  return { pair, signer: await loadSigningKey(file) };
}

/** A signature made without tarport's signDetached, carrying the notation value given. */
async function signedWithNotation(key: openpgp.PrivateKey, value: Uint8Array): Promise<Buffer> {
  const message = await openpgp.createMessage({ binary: Buffer.from('data') });
  const sig = await openpgp.sign({ message, signingKeys: key, detached: true, format: 'armored', signatureNotations: [{ name: SIGNER_NOTATION, value, humanReadable: true, critical: false }] });
  return Buffer.from(sig as string);
}

describe('the signer a signature names', () => {
  it("names the signing key's primary user id beside its fingerprint, covered by the signature", async () => {
    const { pair, signer } = await signingKey('Release Bot <release@example.org>');
    expect(signer.userId).toBe('Release Bot <release@example.org>');
    const sig = await signDetached(Buffer.from('catalog bytes'), signer);
    expect(await signatureUserId(sig)).toBe('Release Bot <release@example.org>');
    expect(await signatureIssuer(sig)).toBe(pair.fingerprint);
    // the notation is in the hashed area: the signature still verifies as made
    const verified = await openpgp.verify({
      message: await openpgp.createMessage({ binary: Buffer.from('catalog bytes') }),
      signature: await openpgp.readSignature({ armoredSignature: sig.toString() }),
      verificationKeys: await openpgp.readKey({ armoredKey: pair.publicKey }),
    });
    await expect(verified.signatures[0]!.verified).resolves.toBe(true);
  });

  it('a signature without the notation, or with one that is not short printable text, names no user id', async () => {
    const { signer } = await signingKey('Ops <ops@example.org>');
    const plain = Buffer.from((await openpgp.sign({ message: await openpgp.createMessage({ binary: Buffer.from('x') }), signingKeys: signer.key, detached: true, format: 'armored' })) as string);
    expect(await signatureUserId(plain)).toBeUndefined();
    expect(await signatureUserId(await signedWithNotation(signer.key, new TextEncoder().encode('evil\u001b[2J<x@y>')))).toBeUndefined();
    expect(await signatureUserId(await signedWithNotation(signer.key, new TextEncoder().encode('a'.repeat(257))))).toBeUndefined();
    expect(await signatureUserId(await signedWithNotation(signer.key, Uint8Array.from([0xff, 0xfe])))).toBeUndefined();
    expect(await signatureUserId(await signedWithNotation(signer.key, new TextEncoder().encode('Ops <ops@example.org>')))).toBe('Ops <ops@example.org>');
    expect(await signatureUserId(Buffer.from('not a signature'))).toBeUndefined();
  });
});

describe('signedBy: whether a signature is the key that signs now', () => {
  it("a signature names its own key's fingerprint, not another key's; one that does not parse names none", async () => {
    const [a, b] = [await signingKey('A <a@example.org>'), await signingKey('B <b@example.org>')];
    expect(a.signer.signsAs).toBe(a.pair.fingerprint);
    const sig = await signDetached(Buffer.from('record'), a.signer);
    expect(await signedBy(sig, a.signer.signsAs)).toBe(true);
    expect(await signedBy(sig, b.signer.signsAs)).toBe(false);
    expect(await signedBy(Buffer.from('not a signature'), a.signer.signsAs)).toBe(false);
  });

  it('a key that signs with a subkey: signsAs is that subkey, which its signatures name', async () => {
    const made = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Sub' }], subkeys: [{}, { sign: true }], format: 'armored' });
    const file = join(await tempDir('tarport-pgp-'), 'sub.sec.asc');
    await writeFile(file, made.privateKey);
    const signer = await loadSigningKey(file);
    const subkey = (await signer.key.getSigningKey()).getFingerprint().toUpperCase();
    expect(signer.signsAs).toBe(subkey);
    expect(signer.signsAs).not.toBe(signer.fingerprint);
    expect(await signedBy(await signDetached(Buffer.from('record'), signer), signer.signsAs)).toBe(true);
  });

  it('a signature that carries only the issuer key id (no Issuer Fingerprint subpacket, as older signers make) is told by the key id', async () => {
    const [a, b] = [await signingKey('A <a@example.org>'), await signingKey('B <b@example.org>')];
    // openpgp.js always writes the fingerprint subpacket: a key packet that has no fingerprint to
    // give makes it leave that out, as gpg 1.4 does
    const packet = (await a.signer.key.getSigningKey()).keyPacket;
    packet.getFingerprintBytes = () => null as unknown as Uint8Array;
    const sig = await signDetached(Buffer.from('record'), a.signer);
    const read = await openpgp.readSignature({ armoredSignature: sig.toString() });
    expect(read.packets[0]!.issuerFingerprint).toBeNull();
    expect(await signedBy(sig, a.pair.fingerprint)).toBe(true);
    expect(await signedBy(sig, b.pair.fingerprint)).toBe(false);
  });
});

describe('verifyDetached', () => {
  it('a signature file of two: an untrusted key\'s good signature and the trusted key\'s over other bytes; the fault named is the trusted key\'s', async () => {
    const evil = await signingKey('Evil <evil@example.org>');
    const prod = await signingKey('Prod <prod@example.org>');
    const pub = join(await tempDir('tarport-pgp-'), 'prod.pub.asc');
    await writeFile(pub, prod.pair.publicKey);
    const trusted = await loadTrustedKeys([pub]);
    const data = Buffer.from('the catalog');
    const good = await openpgp.readSignature({ armoredSignature: (await signDetached(data, evil.signer)).toString() });
    const other = await openpgp.readSignature({ armoredSignature: (await signDetached(Buffer.from('another catalog'), prod.signer)).toString() });
    const both = new openpgp.PacketList<openpgp.AnyPacket>();
    both.push(...good.packets, ...other.packets);
    const armored = Buffer.from(new openpgp.Signature(both as unknown as openpgp.PacketList<openpgp.SignaturePacket>).armor());
    await expect(verifyDetached(data, armored, trusted, 'catalog')).rejects.toMatchObject({ code: 'UNTRUSTED', message: `catalog: bad signature by ${prod.pair.fingerprint}: the file was changed after it was signed` });
    // the trusted key's own good signature is taken
    await expect(verifyDetached(data, await signDetached(data, prod.signer), trusted, 'catalog')).resolves.toBe(prod.pair.fingerprint);
  });
});

describe('loading private keys', () => {
  it('a signing key that cannot sign now (expired) is refused when it is loaded (CONFIG, naming the file and fingerprint), before anything is written', async () => {
    const old = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Old' }], date: new Date(Date.now() - 10 * 86_400_000), keyExpirationTime: 86_400, format: 'armored' });
    const file = join(await tempDir('tarport-pgp-'), 'expired.sec.asc');
    await writeFile(file, old.privateKey);
    const fingerprint = (await openpgp.readKey({ armoredKey: old.publicKey })).getFingerprint().toUpperCase();
    const e = await loadSigningKey(file).catch((x: unknown) => x as { code: string; message: string });
    expect((e as { code: string }).code).toBe('CONFIG');
    expect((e as { message: string }).message).toMatch(new RegExp(`^--sign-key ${file} \\(${fingerprint.match(/.{4}/g)!.join(' ?')}\\) cannot sign now: `));
  });

  it('a protected decryption key without its passphrase names the variable that gives it', async () => {
    const pair = await generateKeyPair('Site <site@example.org>', { type: 'ecc', passphrase: 'secret words' });
    const file = join(await tempDir('tarport-pgp-'), 'site.sec.asc');
    await writeFile(file, pair.privateKey);
    await expect(loadDecryptionKey(file)).rejects.toMatchObject({ code: 'CONFIG', message: `--decrypt-key ${file} (${pair.fingerprint}) is protected by a passphrase: set TARPORT_DECRYPT_KEY_PASSPHRASE` });
    await expect(loadDecryptionKey(file, 'secret words')).resolves.toMatchObject({ fingerprint: pair.fingerprint });
  });
});
