import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SeipdEncrypt, decryptSeipd, openMessage } from './seipd.js';
import * as openpgp from 'openpgp';
import { TarportError } from '../errors.js';

/** A public key we may trust, with the fingerprint every message shows. */
export interface TrustedKey {
  readonly key: openpgp.Key;
  readonly fingerprint: string;
  readonly file: string;
}

export interface SigningKey {
  readonly key: openpgp.PrivateKey;
  readonly fingerprint: string;
  /** The key's primary user id, which every signature names (SIGNER_NOTATION) for pages and listings. */
  readonly userId?: string;
  /**
   * The fingerprint of the key that makes the signatures: a signing subkey's when the key signs with
   * one, else `fingerprint`. It is what each signature names as its issuer (signedBy).
   */
  readonly signsAs: string;
}

/** A private key as read from its file, before it is taken for signing or decryption. */
type PrivateKeyFile = Omit<SigningKey, 'signsAs'>;

/**
 * A notation (RFC 4880 5.2.3.16) in the signature's hashed area that names the signer's user id, so
 * that a page or a listing can show who signed without holding the key. It is a claim, as the
 * issuer fingerprint is: a consumer decides trust from the keys it pins, never from this.
 */
export const SIGNER_NOTATION = 'signer-user-id@tarport';
/** A claimed user id is shown only when it is short printable text (it comes from a repository). */
const MAX_CLAIMED_USER_ID = 256;

/** Key material is read into memory: refuse anything that cannot be a key file. */
const MAX_KEY_FILE = 1 << 20;
const MAX_SIGNATURE = 64 << 10;

async function readKeyFile(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new TarportError('CONFIG', `${what} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (e as Error).message}`);
  }
  if (text.length > MAX_KEY_FILE) throw new TarportError('CONFIG', `${what} ${file}: larger than a key file can be`);
  return text;
}

export function formatFingerprint(fp: string): string {
  return fp.toUpperCase();
}

/** Reads public keys to trust (armored, as `gpg --export --armor` or `tarport keys generate` write). */
export async function loadTrustedKeys(files: readonly string[]): Promise<TrustedKey[]> {
  const out: TrustedKey[] = [];
  for (const f of files) {
    const text = await readKeyFile(f, '--trust');
    let keys: openpgp.Key[];
    try {
      keys = await openpgp.readKeys({ armoredKeys: text });
    } catch (e) {
      throw new TarportError('CONFIG', `--trust ${f}: not an OpenPGP public key (${(e as Error).message}); export one with gpg --export --armor KEYID`);
    }
    for (const key of keys) out.push({ key: key.toPublic(), fingerprint: formatFingerprint(key.getFingerprint()), file: f });
  }
  return out;
}

/** Reads a private key for signing; an encrypted one needs its passphrase (never from argv). */
export async function loadSigningKey(file: string, passphrase?: string): Promise<SigningKey> {
  const k = await readPrivateKeyFile(file, passphrase, { flag: '--sign-key', passphraseFrom: 'TARPORT_SIGN_KEY_PASSPHRASE or --sign-key-passphrase-file' });
  // a key that cannot sign now (expired, made in the future, no signing subkey) is refused here,
  // before anything is written: not as an internal error once the layers are uploaded
  const signing = await k.key.getSigningKey().catch((e: unknown) => {
    throw new TarportError('CONFIG', `--sign-key ${file} (${k.fingerprint}) cannot sign now: ${(e as Error).message.replace(/^Could not find valid signing key packet in key [0-9a-f]+: /, '')}`);
  });
  return { ...k, signsAs: formatFingerprint(signing.getFingerprint()) };
}

/** A private key from its file, decrypted with the passphrase when it has one; `flag` and `passphraseFrom` name them in messages. */
async function readPrivateKeyFile(file: string, passphrase: string | undefined, names: { flag: string; passphraseFrom: string }): Promise<PrivateKeyFile> {
  const text = await readKeyFile(file, names.flag);
  let key: openpgp.PrivateKey;
  try {
    key = await openpgp.readPrivateKey({ armoredKey: text });
  } catch (e) {
    throw new TarportError('CONFIG', `${names.flag} ${file}: not an OpenPGP private key (${(e as Error).message}); export one with gpg --export-secret-keys --armor KEYID`);
  }
  if (!key.isDecrypted()) {
    if (passphrase === undefined) throw new TarportError('CONFIG', `${names.flag} ${file} (${formatFingerprint(key.getFingerprint())}) is protected by a passphrase: set ${names.passphraseFrom}`);
    try {
      key = await openpgp.decryptKey({ privateKey: key, passphrase });
    } catch {
      throw new TarportError('CONFIG', `${names.flag} ${file} (${formatFingerprint(key.getFingerprint())}): wrong passphrase`);
    }
  }
  const userId = await key.getPrimaryUser().then((u) => u.user.userID?.userID, () => undefined);
  return { key, fingerprint: formatFingerprint(key.getFingerprint()), ...(userId ? { userId } : {}) };
}

/** A detached, armored signature of `data` that `gpg --verify sig data` checks. */
export async function signDetached(data: Buffer, signer: SigningKey): Promise<Buffer> {
  const message = await openpgp.createMessage({ binary: data });
  const signatureNotations = signer.userId ? [{ name: SIGNER_NOTATION, value: new TextEncoder().encode(signer.userId), humanReadable: true, critical: false }] : [];
  const sig = await openpgp.sign({ message, signingKeys: signer.key, detached: true, format: 'armored', signatureNotations });
  return Buffer.from(sig as string, 'utf8');
}

/** Who signed, as the signature claims (unverified): for listings and messages. */
export async function signatureIssuer(armored: Buffer): Promise<string | undefined> {
  try {
    const sig = await openpgp.readSignature({ armoredSignature: armored.toString('utf8') });
    const packet = sig.packets[0] as { issuerFingerprint?: Uint8Array | null } | undefined;
    if (packet?.issuerFingerprint) return formatFingerprint(Buffer.from(packet.issuerFingerprint).toString('hex'));
    return sig.getSigningKeyIDs()[0]?.toHex().toUpperCase();
  } catch {
    return undefined;
  }
}

/**
 * Whether a detached signature was made by the key whose fingerprint is `fingerprint` (a SigningKey's
 * `signsAs`): by the Issuer Fingerprint subpacket, or by the issuer key id where a packet carries
 * no fingerprint (older signers). Any packet of a signature file will do, as it does for a consumer's
 * check. A signature that cannot be read was made by no key.
 */
export async function signedBy(armored: Buffer, fingerprint: string): Promise<boolean> {
  let sig: openpgp.Signature;
  try {
    sig = await openpgp.readSignature({ armoredSignature: armored.toString('utf8') });
  } catch {
    return false;
  }
  // a key id is the fingerprint's first 8 bytes for a v6 key (64 hex digits), its last 8 for a v4 key
  const keyId = fingerprint.length === 64 ? fingerprint.slice(0, 16) : fingerprint.slice(-16);
  return sig.packets.some((p) => {
    if (p.issuerFingerprint) return formatFingerprint(Buffer.from(p.issuerFingerprint).toString('hex')) === fingerprint;
    return p.issuerKeyID.toHex().toUpperCase() === keyId;
  });
}

/**
 * Whether a detached signature over `data` was made by `signer`'s signing (sub)key (signedBy) and
 * holds, checked with the key's public half. Anything that does not parse or verify: false.
 */
export async function madeBy(data: Buffer, armored: Buffer, signer: SigningKey): Promise<boolean> {
  if (!(await signedBy(armored, signer.signsAs))) return false;
  try {
    const signature = await openpgp.readSignature({ armoredSignature: armored.toString('utf8') });
    const { signatures } = await openpgp.verify({ message: await openpgp.createMessage({ binary: data }), signature, verificationKeys: signer.key.toPublic() });
    for (const s of signatures) if (await s.verified.catch(() => false)) return true;
    return false;
  } catch {
    return false;
  }
}

/**
 * The signer's user id as the signature claims it (SIGNER_NOTATION; unverified), when it is short
 * printable text: for pages and listings.
 */
export async function signatureUserId(armored: Buffer): Promise<string | undefined> {
  try {
    const sig = await openpgp.readSignature({ armoredSignature: armored.toString('utf8') });
    const packet = sig.packets[0] as { rawNotations?: { name: string; value: Uint8Array }[] } | undefined;
    const raw = packet?.rawNotations?.find((n) => n.name === SIGNER_NOTATION)?.value;
    if (!raw || raw.length > MAX_CLAIMED_USER_ID) return undefined;
    const text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    return /^[^\p{Cc}\p{Cf}]+$/u.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Checks a detached signature of `data` against the trusted keys only (never a key fetched from the
 * repository). Returns the signer's fingerprint; throws UNTRUSTED naming `what` and the signer.
 */
export async function verifyDetached(data: Buffer, armored: Buffer | undefined, trusted: readonly TrustedKey[], what: string): Promise<string> {
  if (!armored) throw new TarportError('UNTRUSTED', `${what} is not signed, and --trust requires a signature`, { retryable: false });
  if (armored.length > MAX_SIGNATURE) throw new TarportError('UNTRUSTED', `${what}: the signature file is larger than a signature can be`, { retryable: false });
  let sig: openpgp.Signature;
  try {
    sig = await openpgp.readSignature({ armoredSignature: armored.toString('utf8') });
  } catch (e) {
    throw new TarportError('UNTRUSTED', `${what}: unreadable signature (${(e as Error).message})`, { retryable: false });
  }
  const issuer = (await signatureIssuer(armored)) ?? 'an unknown key';
  const match = trusted.filter((t) => sig.getSigningKeyIDs().some((id) => t.key.getKeys(id).length > 0));
  if (match.length === 0) {
    throw new TarportError('UNTRUSTED', `${what} is signed by ${issuer}, which is not among the trusted keys (${trusted.map((t) => t.fingerprint).join(', ')})`, { retryable: false });
  }
  const result = await openpgp.verify({ message: await openpgp.createMessage({ binary: data }), signature: sig, verificationKeys: match.map((m) => m.key), format: 'binary' });
  let failed: string | undefined;
  for (const v of result.signatures) {
    const signer = match.find((m) => m.key.getKeys(v.keyID).length > 0);
    try {
      await v.verified;
      return signer?.fingerprint ?? issuer;
    } catch {
      // the one to blame is a trusted key whose signature does not hold, not the first packet's
      // issuer: a signature file may carry several, and an untrusted key's proves nothing
      failed ??= signer?.fingerprint;
    }
  }
  throw new TarportError('UNTRUSTED', `${what}: bad signature by ${failed ?? issuer}: the file was changed after it was signed`, { retryable: false });
}

/** A new key pair, armored; gpg imports both (RSA 3072 by default, for gpg 2.2 and ocicrypt). */
export async function generateKeyPair(uid: string, opts: { type: 'rsa' | 'ecc'; passphrase?: string }): Promise<{ publicKey: string; privateKey: string; fingerprint: string }> {
  const m = /^\s*([^<]*?)\s*<([^>]+)>\s*$/.exec(uid);
  const userIDs = m ? [{ name: m[1] || undefined, email: m[2] }] : [{ name: uid }];
  const r = await openpgp.generateKey({
    ...(opts.type === 'rsa' ? { type: 'rsa' as const, rsaBits: 3072 } : { type: 'ecc' as const, curve: 'curve25519Legacy' as const }),
    userIDs,
    format: 'armored',
    ...(opts.passphrase ? { passphrase: opts.passphrase } : {}),
  });
  const key = await openpgp.readKey({ armoredKey: r.publicKey });
  return { publicKey: r.publicKey, privateKey: r.privateKey, fingerprint: formatFingerprint(key.getFingerprint()) };
}

/** Public keys to encrypt to (--encrypt-to). */
export async function loadRecipients(files: readonly string[]): Promise<TrustedKey[]> {
  const keys = await loadTrustedKeys(files).catch((e: unknown) => {
    throw e instanceof TarportError ? new TarportError('CONFIG', e.message.replace('--trust', '--encrypt-to')) : e;
  });
  for (const k of keys) {
    if (!(await k.key.getEncryptionKey().catch(() => undefined))) {
      throw new TarportError('CONFIG', `--encrypt-to ${k.file} (${k.fingerprint}): this key cannot encrypt (no encryption subkey, or expired)`);
    }
  }
  return keys;
}

export interface DecryptionKey {
  readonly key: openpgp.PrivateKey;
  readonly fingerprint: string;
}

export async function loadDecryptionKey(file: string, passphrase?: string): Promise<DecryptionKey> {
  return readPrivateKeyFile(file, passphrase, { flag: '--decrypt-key', passphraseFrom: 'TARPORT_DECRYPT_KEY_PASSPHRASE' });
}

/**
 * Encrypts a stream to every recipient as one OpenPGP message (SEIPD v1 with MDC, AES-256: what gpg
 * 2.2 reads, so `gpg --decrypt` opens any object by hand). openpgp.js encrypts the session key to
 * each recipient; the bulk runs in node:crypto (seipd.ts). Nothing is held whole in memory.
 */
export async function encryptStream(input: Readable, recipients: readonly TrustedKey[]): Promise<Readable> {
  const sessionKey = randomBytes(32);
  const pkesk = Buffer.from(
    await openpgp.encryptSessionKey({ data: sessionKey, algorithm: 'aes256', encryptionKeys: recipients.map((r) => r.key), format: 'binary' }),
  );
  const enc = new SeipdEncrypt(pkesk, sessionKey);
  // A pipeline, not pipe(): an input that failed while the session key was sealed (above) is
  // already destroyed, and pipe() would leave `enc` waiting for ever; a pipeline fails `enc` with
  // the input's fault. That may come before the caller reads `enc` (it stages objects once a place
  // is ready): the fault stays on the stream for the reader's pipeline, not thrown unheard.
  enc.on('error', () => undefined);
  pipeline(input, enc).catch(() => undefined);
  return enc;
}

/**
 * Decrypts a stream into at most `maxBytes` of plaintext (a compressed message cannot inflate past
 * it). Callers check the ciphertext's digest against the release record first; that record is
 * authenticated only when it is signed and the consumer pins the key (--trust): without that, the
 * record is whatever the repository says, and the MDC proves only that the message is whole, not who
 * made it (anyone with the recipient's public key can make a valid one). The stream ends only after
 * the MDC was verified, and fails instead when it does not match.
 */
export async function decryptStream(input: Readable, key: DecryptionKey, what: string, limits: { maxBytes: number }): Promise<Readable> {
  const { pkesk, reader, seipd } = await openMessage(input, what);
  let sessions: { data: Uint8Array; algorithm: string | null }[];
  try {
    const message = await openpgp.readMessage({ binaryMessage: pkesk });
    sessions = await openpgp.decryptSessionKeys({ message, decryptionKeys: key.key });
  } catch (e) {
    throw new TarportError('UNTRUSTED', `${what}: cannot decrypt with --decrypt-key ${key.fingerprint} (${(e as Error).message})`, { retryable: false });
  }
  const session = sessions[0];
  if (!session) throw new TarportError('UNTRUSTED', `${what}: cannot decrypt with --decrypt-key ${key.fingerprint}`, { retryable: false });
  return decryptSeipd(reader, seipd, session, what, limits.maxBytes);
}
