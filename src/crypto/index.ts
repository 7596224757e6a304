export { Digester, DigestCheck, Verifier, sha256, isDigest, hexOf, DIGEST_RE } from './digest.js';
export type { DecryptionKey, SigningKey, TrustedKey } from './pgp.js';

// OpenPGP (openpgp.js) loads on first use: commands that never sign, verify or decrypt start faster.
type Pgp = typeof import('./pgp.js');
const pgp = () => import('./pgp.js');
/** Every export of pgp.ts is async, so a wrapper that imports the module first has the same type. */
function lazy<K extends keyof Pgp>(name: K): Pgp[K] {
  return (async (...args: unknown[]) => ((await pgp())[name] as (...a: unknown[]) => unknown)(...args)) as Pgp[K];
}

export const decryptStream = lazy('decryptStream');
export const encryptStream = lazy('encryptStream');
export const loadDecryptionKey = lazy('loadDecryptionKey');
export const loadRecipients = lazy('loadRecipients');
export const generateKeyPair = lazy('generateKeyPair');
export const loadSigningKey = lazy('loadSigningKey');
export const loadTrustedKeys = lazy('loadTrustedKeys');
export const signDetached = lazy('signDetached');
export const signatureIssuer = lazy('signatureIssuer');
export const signatureUserId = lazy('signatureUserId');
export const signedBy = lazy('signedBy');
export const madeBy = lazy('madeBy');
export const verifyDetached = lazy('verifyDetached');
