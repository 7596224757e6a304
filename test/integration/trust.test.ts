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
    const push = await tarport(['push', fixture('app-v1.tar'), '--to', repo, '--name', tag, '--sign-key', producer.sec]);
    expect(push.code, push.stderr).toBe(0);
    // gpg checks every signature by hand
    const home = await tempDir('tarport-gnupg-');
    await gpg(home, '--import', producer.pub);
    const sigs = (await filesBelow(repo)).filter((f) => f.endsWith('.asc'));
    expect(sigs.sort()).toEqual([expect.stringMatching(/^tarport\/catalog\.json\.asc$/), expect.stringMatching(/^tarport\/releases\/.*\.json\.asc$/)].sort());
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
    expect((await tarport(['push', fixture('app-v1.tar'), '--to', plain, '--name', tag])).code).toBe(0);
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
    expect((await tarport(['push', fixture('app-v1.tar'), '--to', repo, '--name', 'tarport-test/gpgkey:1', '--sign-key', sec])).code).toBe(0);
    const p = await tarport(['pull', '--from', repo, '--state', join(dir, 's'), '--trust', pub], { DOCKER_HOST: env.consumer });
    expect(p.code, p.stderr).toBe(0);

    await writeFile(join(dir, 'pass'), 'correct horse\n');
    const r = await tarport(['keys', 'generate', '--uid', 'locked <l@example.invalid>', '--out', join(dir, 'locked'), '--type', 'ecc', '--passphrase-file', join(dir, 'pass')]);
    expect(r.code, r.stderr).toBe(0);
    const noPass = await tarport(['push', fixture('app-v1.tar'), '--to', join(dir, 'r2'), '--name', 'x/y:1', '--sign-key', join(dir, 'locked.sec.asc')]);
    expect(noPass.code).toBe(2);
    expect(noPass.stderr).toMatch(/passphrase/);
    expect(await filesBelow(join(dir, 'r2'))).toEqual([]);
    const withPass = await tarport(['push', fixture('app-v1.tar'), '--to', join(dir, 'r2'), '--name', 'x/y:1', '--sign-key', join(dir, 'locked.sec.asc')], { TARPORT_SIGN_KEY_PASSPHRASE: 'correct horse' });
    expect(withPass.code, withPass.stderr).toBe(0);
  });
});
