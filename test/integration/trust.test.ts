import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { docker, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// Signed releases with real gpg as the second opinion: it verifies our signatures, and keys it
// makes sign releases we accept.

const run = promisify(execFile);
const env = realEnv();

async function gpg(home: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run('gpg', ['--homedir', home, '--batch', '--yes', '--pinentry-mode', 'loopback', ...args]);
}

async function keys(dir: string, name: string): Promise<{ pub: string; sec: string; fpr: string }> {
  const r = await tarport(['keys', 'generate', '--uid', `${name} <${name}@example.invalid>`, '--out', join(dir, name), '--json']);
  expect(r.code, r.stderr).toBe(0);
  const doc = JSON.parse(r.stdout);
  return { pub: doc.publicKey, sec: doc.privateKey, fpr: doc.fingerprint };
}

describe('trust: signed releases and pinned keys', () => {
  it('signs records and the catalog so that gpg verifies them; a pinned key loads; another key, no signature or a changed catalog are refused (exit 3)', async () => {
    const dir = await tempDir();
    const producer = await keys(dir, 'producer');
    const stranger = await keys(dir, 'stranger');
    const repo = join(dir, 'repo');
    const tag = `tarport-test/signed-${randomBytes(3).toString('hex')}:1`;
    const push = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', tag, '--sign-key', producer.sec]);
    expect(push.code, push.stderr).toBe(0);
    // gpg checks every signature by hand
    const home = await tempDir('tarport-gnupg-');
    await gpg(home, '--import', producer.pub);
    const sigs = (await filesBelow(repo)).filter((f) => f.endsWith('.asc'));
    // the catalog's signature is named after the catalog it signs (tarport/catalogs/<sequence>-<digest>.json,
    // of which tarport/catalog.json is a copy): it can never sit beside another catalog
    expect(sigs.sort()).toEqual([expect.stringMatching(/^tarport\/catalogs\/\d+-[0-9a-f]+\.json\.asc$/), expect.stringMatching(/^tarport\/releases\/.*\.json\.asc$/)]);
    for (const s of sigs) {
      const v = await gpg(home, '--verify', join(repo, s), join(repo, s.slice(0, -4)));
      expect(v.stderr).toMatch(/Good signature/);
    }
    const ls = JSON.parse((await tarport(['ls', repo, '--json'])).stdout);
    expect(ls.releases[0].signer).toBe(producer.fpr);

    // another key pinned: refused, naming the signer; nothing loaded
    const wrong = await tarport(['pull', '--from', repo, '--state', join(dir, 's1'), '--trust', stranger.pub], { DOCKER_HOST: env.consumer });
    expect(wrong.code).toBe(3);
    expect(wrong.stderr).toContain(producer.fpr);
    await expect(docker('consumer', 'image', 'inspect', tag)).rejects.toThrow();

    // the right key pinned: loads, and says who signed
    const ok = await tarport(['pull', '--from', repo, '--state', join(dir, 's2'), '--trust', producer.pub, '--trust', stranger.pub], { DOCKER_HOST: env.consumer });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain(`signed by ${producer.fpr}`);

    // a catalog changed after signing (a later expiry, say): bad signature
    const cat = join(repo, 'tarport/catalog.json');
    await writeFile(cat, (await readFile(cat, 'utf8')).replace(/"expires": "\d{4}/, '"expires": "2999'));
    const changed = await tarport(['pull', '--from', repo, '--state', join(dir, 's3'), '--trust', producer.pub], { DOCKER_HOST: env.consumer });
    expect(changed.code).toBe(3);
    expect(changed.stderr).toMatch(/bad signature/);

    // an unsigned repository, with a key pinned: refused
    const plain = join(dir, 'plain');
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', plain, '--name', tag])).code).toBe(0);
    const unsigned = await tarport(['pull', '--from', plain, '--state', join(dir, 's4'), '--trust', producer.pub], { DOCKER_HOST: env.consumer });
    expect(unsigned.code).toBe(3);
    expect(unsigned.stderr).toMatch(/not signed/);
  });

  it('a key made and exported by gpg signs releases that tarport accepts; a protected key needs its passphrase', async () => {
    const dir = await tempDir();
    const home = await tempDir('tarport-gnupg-');
    await gpg(home, '--passphrase', '', '--quick-gen-key', 'gpg producer <gpg@example.invalid>', 'rsa3072', 'sign', 'never');
    const sec = join(dir, 'gpg.sec.asc');
    const pub = join(dir, 'gpg.pub.asc');
    await writeFile(sec, (await gpg(home, '--armor', '--export-secret-keys')).stdout);
    await writeFile(pub, (await gpg(home, '--armor', '--export')).stdout);
    const repo = join(dir, 'repo');
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'tarport-test/gpgkey:1', '--sign-key', sec])).code).toBe(0);
    const p = await tarport(['pull', '--from', repo, '--state', join(dir, 's'), '--trust', pub], { DOCKER_HOST: env.consumer });
    expect(p.code, p.stderr).toBe(0);

    await writeFile(join(dir, 'pass'), 'correct horse\n');
    const r = await tarport(['keys', 'generate', '--uid', 'locked <l@example.invalid>', '--out', join(dir, 'locked'), '--type', 'ecc', '--passphrase-file', join(dir, 'pass')]);
    expect(r.code, r.stderr).toBe(0);
    const noPass = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', join(dir, 'r2'), '--name', 'x/y:1', '--sign-key', join(dir, 'locked.sec.asc')]);
    expect(noPass.code).toBe(2);
    expect(noPass.stderr).toMatch(/passphrase/);
    expect(await filesBelow(join(dir, 'r2'))).toEqual([]);
    const withPass = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', join(dir, 'r2'), '--name', 'x/y:1', '--sign-key', join(dir, 'locked.sec.asc')], { TARPORT_SIGN_KEY_PASSPHRASE: 'correct horse' });
    expect(withPass.code, withPass.stderr).toBe(0);
  });

  it('encrypted and signed over SFTP: no plaintext in the repository, gpg opens any object, the image runs in the consumer daemon', async () => {
    const sftp = process.env.TP_SFTP_URL;
    const home = process.env.TP_SERVER_HOME;
    if (!sftp || !home) throw new Error('run through scripts/test: TP_SFTP_URL is not set');
    const dir = await tempDir();
    const producer = await keys(dir, 'producer');
    const site = await keys(dir, 'site');
    const other = await keys(dir, 'other');
    const sub = `enc-${randomBytes(3).toString('hex')}`;
    const tag = `tarport-test/secret-${randomBytes(3).toString('hex')}:1`;
    const ssh = ['--identity', process.env.TP_SFTP_IDENTITY!, '--known-hosts', process.env.TP_SFTP_KNOWN_HOSTS!];
    // uncompressed, so that without encryption the image's bytes would be there to find
    const push = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', `${sftp}/${sub}`, '--name', tag, '--compress', 'none', '--sign-key', producer.sec, '--encrypt-to', site.pub, ...ssh]);
    expect(push.code, push.stderr).toBe(0);
    const repo = join(home, sub);
    const secrets = ['hello from v1', 'deleted-in-upper', '/app/hello.txt', 'busybox'];
    const control = join(dir, 'control');
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', control, '--name', tag, '--compress', 'none'])).code).toBe(0);
    const found = async (root: string) => {
      const hits = new Set<string>();
      for (const f of await filesBelow(root)) {
        const text = (await readFile(join(root, f))).toString('latin1');
        for (const s of secrets) if (text.includes(s)) hits.add(s);
      }
      return [...hits].sort();
    };
    expect(await found(control)).toEqual([...secrets].sort()); // the check can find them
    expect(await found(repo)).toEqual([]);
    expect(JSON.parse((await tarport(['ls', control, '--json'])).stdout).releases[0].encrypted).toBe(false);

    // gpg opens an object by hand: the biggest one is a layer, a tar once decrypted
    const gh = await tempDir('tarport-gnupg-');
    await gpg(gh, '--import', site.sec);
    const blobs = (await filesBelow(join(repo, 'blobs/sha256'))).filter((b) => !b.startsWith('.'));
    const { stat } = await import('node:fs/promises');
    let biggest = blobs[0]!;
    for (const b of blobs) if ((await stat(join(repo, 'blobs/sha256', b))).size > (await stat(join(repo, 'blobs/sha256', biggest))).size) biggest = b;
    await gpg(gh, '--output', join(dir, 'layer.tar'), '--decrypt', join(repo, 'blobs/sha256', biggest));
    const listing = (await run('tar', ['tf', join(dir, 'layer.tar')])).stdout;
    expect(listing).toMatch(/app\//);

    const from = ['--from', `${sftp}/${sub}`, ...ssh, '--trust', producer.pub];
    const noKey = await tarport(['pull', ...from, '--state', join(dir, 's0')], { DOCKER_HOST: env.consumer });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toMatch(/encrypted .*--decrypt-key/);
    const wrongKey = await tarport(['pull', ...from, '--state', join(dir, 's1'), '--decrypt-key', other.sec], { DOCKER_HOST: env.consumer });
    expect(wrongKey.code).toBe(3);
    expect(wrongKey.stderr).toMatch(/cannot decrypt/);
    await expect(docker('consumer', 'image', 'inspect', tag)).rejects.toThrow();
    const ok = await tarport(['pull', ...from, '--state', join(dir, 's2'), '--decrypt-key', site.sec], { DOCKER_HOST: env.consumer });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).not.toMatch(/NOT authenticated/); // --trust is given: no warning
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', tag, '/bin/cat', '/app/hello.txt')).toBe('hello from v1');
  });

  it('reads what gpg encrypts', async () => {
    const dir = await tempDir();
    const site = await keys(dir, 'site');
    const gh = await tempDir('tarport-gnupg-');
    await gpg(gh, '--import', site.pub);
    // compressible, so that gpg's compression really compresses
    const data = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(2 << 20, 'tarport ')]);
    await writeFile(join(dir, 'plain'), data);
    const { decryptStream, loadDecryptionKey } = await import('../../src/crypto/index.js');
    const { createReadStream } = await import('node:fs');
    // uncompressed, and gpg's own defaults (ZLIB), and ZIP
    for (const [name, compress] of [['none', ['--compress-algo', 'none']], ['zlib', ['--compress-algo', 'zlib']], ['zip', ['--compress-algo', 'zip']]] as const) {
      const sealed = join(dir, `sealed-${name}`);
      await gpg(gh, '--trust-model', 'always', ...compress, '--cipher-algo', 'AES256', '--recipient', site.fpr, '--output', sealed, '--encrypt', join(dir, 'plain'));
      const out: Buffer[] = [];
      for await (const c of await decryptStream(createReadStream(sealed), await loadDecryptionKey(site.sec), 'gpg message', { maxBytes: 1 << 30 })) out.push(c as Buffer);
      expect(Buffer.concat(out).equals(data), name).toBe(true);
    }
  });
});
