export { Digester, Verifier, sha256, isDigest, hexOf, DIGEST_RE } from './digest.js';
