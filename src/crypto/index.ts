export { Digester, Verifier, sha256, isDigest, hexOf, DIGEST_RE } from './digest.js';
export { decryptStream, encryptStream, loadDecryptionKey, loadRecipients, type DecryptionKey } from './pgp.js';
export { generateKeyPair, loadSigningKey, loadTrustedKeys, signDetached, signatureIssuer, verifyDetached, type SigningKey, type TrustedKey } from './pgp.js';
