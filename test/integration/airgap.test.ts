import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { isPortableFileName } from '../../src/repo/index.js';
import { ROOT, docker, emptyDaemon, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// Air gap: high side over SFTP → a stick (a directory) → low side over FTPS, and a stick that
// carries only what the other side lacks.

const env = realEnv();
const S = {
  sftp: process.env.TP_SFTP_URL!,
  ftps: process.env.TP_FTPS_URL!,
  password: process.env.TP_FTP_PASSWORD!,
  ca: process.env.TP_FTPS_CA!,
  identity: process.env.TP_SFTP_IDENTITY!,
  knownHosts: process.env.TP_SFTP_KNOWN_HOSTS!,
};
const remote = ['--identity', S.identity, '--known-hosts', S.knownHosts, '--ca', S.ca];
const withPw = { TARPORT_PASSWORD: S.password };
let dir: string;
let keyPub: string;
let keySec: string;

beforeAll(async () => {
  // what the daemon holds decides which objects a pull reads: start from an empty one
  await emptyDaemon('consumer');
  if (!S.sftp || !S.ftps) throw new Error('run through scripts/test: the servers are not set up');
  dir = await tempDir();
  expect((await tarport(['keys', 'generate', '--uid', 'high side <high@example.invalid>', '--out', join(dir, 'high'), '--type', 'ecc'])).code).toBe(0);
  keyPub = join(dir, 'high.pub.asc');
  keySec = join(dir, 'high.sec.asc');
});

async function stickBytes(stick: string): Promise<number> {
  let n = 0;
  for (const f of await filesBelow(stick)) n += (await stat(join(stick, f))).size;
  return n;
}

async function portable(stick: string): Promise<void> {
  for (const f of await filesBelow(stick)) for (const seg of f.split('/')) expect(isPortableFileName(seg), f).toBe(true);
}

describe('air gap: tarport sync', () => {
  it('high side (SFTP) → stick → low side (FTPS) → consumer; the next stick holds only the new layer', async () => {
    const id = randomBytes(3).toString('hex');
    const high = `${S.sftp}/high-${id}`;
    const low = `${S.ftps}/low-${id}`;
    const tag = `tarport-test/airgap-${id}:live`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', high, '--name', tag, '--sign-key', keySec, ...remote])).code).toBe(0);
    const stick = join(dir, `stick1-${id}`);
    const s1 = await tarport(['sync', '--init', high, stick, ...remote]);
    expect(s1.code, s1.stderr).toBe(0);
    await portable(stick);
    const s2 = await tarport(['sync', '--init', stick, low, ...remote], withPw);
    expect(s2.code, s2.stderr).toBe(0);
    expect(s2.stderr).toMatch(/catalog: copied \(signed\)/);
    const state = join(dir, `state-${id}`);
    const p1 = await tarport(['pull', '--from', low, '--state', state, '--trust', keyPub, ...remote], { ...withPw, DOCKER_HOST: env.consumer });
    expect(p1.code, p1.stderr).toBe(0);
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', tag, '/bin/cat', '/app/hello.txt')).toBe('hello from v1');

    // the low side says what it has; the next stick carries the difference only
    const inv = join(dir, `inv-${id}.json`);
    const i = await tarport(['inventory', '--docker', '--state', state, '-o', inv], { DOCKER_HOST: env.consumer });
    expect(i.code, i.stderr).toBe(0);
    expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', high, '--name', tag, '--sign-key', keySec, ...remote])).code).toBe(0);
    const stick2 = join(dir, `stick2-${id}`);
    const s3 = await tarport(['sync', '--init', high, stick2, '--have', inv, ...remote]);
    expect(s3.code, s3.stderr).toBe(0);
    const records = (await filesBelow(join(stick2, 'tarport/releases'))).filter((f) => f.endsWith('.json'));
    const v2 = JSON.parse(await readFile(join(stick2, 'tarport/releases', records[0]!), 'utf8'));
    const v1Diffs = new Set(JSON.parse(await readFile(inv, 'utf8')).diffIds);
    const newLayer = v2.layers.filter((l: { diffId: string }) => !v1Diffs.has(l.diffId)).reduce((n: number, l: { size: number }) => n + l.size, 0);
    expect(newLayer).toBeGreaterThan(0);
    expect(await stickBytes(stick2)).toBeLessThanOrEqual(1.05 * newLayer + 64 * 1024);
    await portable(stick2);
    // the site loads from the difference stick plus what it has
    const p2 = await tarport(['pull', '--from', stick2, '--state', state, '--trust', keyPub], { DOCKER_HOST: env.consumer });
    expect(p2.code, p2.stderr).toBe(0);
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', tag, '/bin/cat', '/app/v2.txt')).toBe('hello from v2');
  });

  it('inventory --docker counts a loaded release only while the daemon still holds its image under that name', async () => {
    const id = randomBytes(3).toString('hex');
    const src = join(dir, `inv-src-${id}`);
    const tag = `tarport-test/inv-${id}:1`;
    expect((await tarport(['push', '--init', fixture('small-v1.tar'), '--to', src, '--name', tag])).code).toBe(0);
    const state = join(dir, `inv-state-${id}`);
    const p = await tarport(['pull', '--from', src, '--state', state], { DOCKER_HOST: env.consumer });
    expect(p.code, p.stderr).toBe(0);
    const inv = join(dir, `inv-${id}.json`);
    const held = async () => {
      const r = await tarport(['inventory', '--docker', '--state', state, '-o', inv], { DOCKER_HOST: env.consumer });
      expect(r.code, r.stderr).toBe(0);
      return { releases: Object.keys(JSON.parse(await readFile(inv, 'utf8')).releases as Record<string, string[]>), stderr: r.stderr };
    };
    expect((await held()).releases).toContain(tag);
    await docker('consumer', 'rmi', '-f', tag);
    const after = await held();
    expect(after.releases).not.toContain(tag);
    expect(after.stderr).toContain(`${tag} v1: loaded once, but`);
  });

  it('an interrupted sync resumes, a truncated object is repaired, and a small --max-file-size splits and reassembles', async () => {
    const id = randomBytes(3).toString('hex');
    const src = join(dir, `src-${id}`);
    const tag = `tarport-test/stick-${id}:1`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', src, '--name', tag, '--compress', 'none'])).code).toBe(0);
    const stick = join(dir, `stick-${id}`);
    // interrupted: killed once the first object is on the stick
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'sync', '--init', src, stick, '--max-file-size', '1M'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve) => {
      let err = '';
      child.stderr!.on('data', (d) => {
        err += d;
        if (/object .* copied/.test(err)) {
          child.kill('SIGKILL');
          resolve();
        }
      });
      child.on('close', () => resolve());
    });
    const again = await tarport(['sync', '--init', src, stick, '--max-file-size', '1M']);
    expect(again.code, again.stderr).toBe(0);
    // split: no file on the stick above the limit, and parts with a list
    for (const f of await filesBelow(stick)) expect((await stat(join(stick, f))).size, f).toBeLessThanOrEqual(1 << 20);
    expect((await filesBelow(stick)).some((f) => f.endsWith('.parts'))).toBe(true);
    await portable(stick);
    // a truncated part is repaired by the next run
    const part = (await filesBelow(stick)).find((f) => /\.p0002$/.test(f))!;
    await truncate(join(stick, part), 1000);
    const repair = await tarport(['sync', '--init', src, stick, '--max-file-size', '1M']);
    expect(repair.code, repair.stderr).toBe(0);
    expect(repair.stderr).toMatch(/repaired/);
    // and what is on the stick loads
    await docker('consumer', 'rmi', '-f', tag).catch(() => undefined);
    const p = await tarport(['pull', '--from', stick, '--state', join(dir, `st-${id}`)], { DOCKER_HOST: env.consumer });
    expect(p.code, p.stderr).toBe(0);
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', tag, '/bin/cat', '/app/hello.txt')).toBe('hello from v1');
  });

  it('directory → directory: the copy checks every digest, a damaged source object stops it with nothing half-visible, a damaged stick object is repaired', async () => {
    const id = randomBytes(3).toString('hex');
    const src = join(dir, `lsrc-${id}`);
    const tag = `tarport-test/local-${id}:1`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', src, '--name', tag])).code).toBe(0);
    const objects = (await filesBelow(join(src, 'blobs'))).map((f) => join('blobs', f));
    const big = (await Promise.all(objects.map(async (f) => ({ f, size: (await stat(join(src, f))).size })))).sort((a, b) => b.size - a.size)[0]!.f;

    const stick = join(dir, `lstick-${id}`);
    const ok = await tarport(['sync', '--init', src, stick]);
    expect(ok.code, ok.stderr).toBe(0);
    for (const f of objects) expect((await readFile(join(stick, f))).equals(await readFile(join(src, f))), f).toBe(true);
    const checked = await tarport(['check', stick]);
    expect(checked.code, checked.stderr + checked.stdout).toBe(0);

    // the same size, one byte flipped: the source lies about this object
    const bad = join(dir, `lbad-${id}`);
    expect((await tarport(['sync', '--init', src, bad])).code).toBe(0);
    const victim = join(bad, big);
    const bytes = await readFile(victim);
    bytes[bytes.length >> 1]! ^= 0xff;
    await writeFile(victim, bytes);
    const stick2 = join(dir, `lstick2-${id}`);
    const refused = await tarport(['sync', '--init', bad, stick2]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(new RegExp(`${big.split('/').pop()}.*digest mismatch`));
    const left = await filesBelow(stick2);
    expect(left.filter((f) => f.endsWith(big.split('/').pop()!) || /tmp/.test(f))).toEqual([]);
    // no record, no catalog; the identity comes with the first thing kept (an object the run copied
    // before the bad one stopped it), so that the next sync finds the repository without --init
    expect(left.filter((f) => f.startsWith('tarport/') && f !== 'tarport/format.json')).toEqual([]);
    expect(left.includes('tarport/format.json')).toBe(left.some((f) => f.startsWith('blobs/sha256/')));

    // damaged on the stick (same size): the next sync notices and copies it again
    const onStick = join(stick, big);
    const b2 = await readFile(onStick);
    b2[0]! ^= 0xff;
    await writeFile(onStick, b2);
    const repaired = await tarport(['sync', '--init', src, stick]);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(repaired.stderr).toMatch(/repaired/);
    expect((await readFile(onStick)).equals(await readFile(join(src, big)))).toBe(true);
  });

  it('on a terminal, sync shows one progress bar in place of the lines per object; a log keeps the lines', async () => {
    const id = randomBytes(3).toString('hex');
    const src = join(dir, `psrc-${id}`);
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', src, '--name', `tarport-test/progress-${id}:1`])).code).toBe(0);
    // script(1) gives the command a pseudo-terminal
    const tty = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const cmd = `${process.execPath} ${join(ROOT, 'bin/tarport.js')} sync --init ${src} ${join(dir, `ptty-${id}`)}`;
      const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      child.on('close', (code) => resolve({ code, out }));
    });
    expect(tty.code, tty.out).toBe(0);
    expect(tty.out).toMatch(/sync \[#+\] 100% 13\.\d MiB of 13\.\d MiB/);
    expect(tty.out).not.toMatch(/object sha256:/);
    expect(tty.out).toMatch(/object\(s\), 13\.\d MiB copied/);
    const log = await tarport(['sync', '--init', src, join(dir, `plog-${id}`)]);
    expect(log.code).toBe(0);
    expect(log.stderr).toMatch(/object sha256:[0-9a-f]{12} .*: copied/);
    expect(log.stderr).not.toMatch(/sync \[/);
  });
});
