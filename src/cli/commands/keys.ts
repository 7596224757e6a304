import { readFile, writeFile } from 'node:fs/promises';
import { generateKeyPair } from '../../crypto/index.js';
import { TarportError } from '../../errors.js';
import type { Context } from '../context.js';

export interface KeysFlags {
  uid?: string;
  out?: string;
  type?: string;
  passphraseFile?: string;
}

/** `tarport keys generate`: an armored key pair that gpg imports. */
export async function keysGenerateCommand(ctx: Context, flags: KeysFlags): Promise<number> {
  if (!flags.uid) throw new TarportError('USAGE', 'keys generate needs --uid "NAME <EMAIL>"');
  const email = /<([^>]*)>\s*$/.exec(flags.uid)?.[1];
  // OpenPGP.js takes an e-mail address only with a domain that has a dot (ci@example.org)
  if (email !== undefined && !/^[^\s@<>]+@[^\s@<>.]+(\.[^\s@<>.]+)+$/.test(email)) {
    throw new TarportError('USAGE', `--uid ${JSON.stringify(flags.uid)}: ${JSON.stringify(email)} is not an e-mail address OpenPGP tools accept; write NAME <USER@DOMAIN.TLD>, e.g. "CI <ci@example.org>", or a name alone`, { flag: '--uid' });
  }
  if (!flags.out) throw new TarportError('USAGE', 'keys generate needs --out PREFIX');
  const type = flags.type ?? 'rsa';
  if (type !== 'rsa' && type !== 'ecc') throw new TarportError('USAGE', `--type ${JSON.stringify(type)}: rsa or ecc`, { flag: '--type' });
  let passphrase: string | undefined;
  if (flags.passphraseFile) {
    passphrase = (
      await readFile(flags.passphraseFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new TarportError('USAGE', `--passphrase-file ${flags.passphraseFile}: ${e.code === 'ENOENT' ? 'not found' : e.message}`, { flag: '--passphrase-file' });
      })
    ).replace(/\r?\n$/, '');
  }
  const pair = await generateKeyPair(flags.uid, { type, ...(passphrase ? { passphrase } : {}) });
  const pub = `${flags.out}.pub.asc`;
  const sec = `${flags.out}.sec.asc`;
  // never overwrite a key: a lost private key cannot be made again
  await writeFile(pub, pair.publicKey, { flag: 'wx', mode: 0o644 }).catch((e: NodeJS.ErrnoException) => {
    throw new TarportError('USAGE', `${pub}: ${e.code === 'EEXIST' ? 'exists already; choose another --out' : e.message}`);
  });
  await writeFile(sec, pair.privateKey, { flag: 'wx', mode: 0o600 }).catch((e: NodeJS.ErrnoException) => {
    throw new TarportError('USAGE', `${sec}: ${e.code === 'EEXIST' ? 'exists already; choose another --out' : e.message}`);
  });
  ctx.out.info(`wrote ${pub} and ${sec} (${type === 'rsa' ? 'RSA 3072' : 'ed25519'}), fingerprint ${pair.fingerprint}`);
  ctx.out.document({ publicKey: pub, privateKey: sec, fingerprint: pair.fingerprint });
  return 0;
}
