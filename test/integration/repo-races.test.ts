import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Repository } from '../../src/repo/index.js';
import { openTransport, parseLocation } from '../../src/transport/index.js';
import { ROOT, fixture, tarport, tarportInProcess, tempDir } from '../helpers.js';

// Issue 18: racing producers, gc racing publishes, and kill -9 anywhere in push, sync and gc,
// on real servers through the real CLI. What races or is killed is a process of its own
// (bin/tarport.js); check and repair, which run after the race has ended, run the same built CLI
// inside this process (tarportInProcess): a spawn costs ~0.5 s of CPU, and this file checks ~200
// times.

const S = {
  ftp: process.env.TP_FTP_URL!,
  ftp2: process.env.TP_FTP2_URL!,
  sftp: process.env.TP_SFTP_URL!,
  password: process.env.TP_FTP_PASSWORD!,
  ca: process.env.TP_FTPS_CA!,
  identity: process.env.TP_SFTP_IDENTITY!,
  knownHosts: process.env.TP_SFTP_KNOWN_HOSTS!,
};
const run = promisify(execFile);
const remote = ['--identity', S.identity, '--known-hosts', S.knownHosts, '--ca', S.ca];
const withPw = { TARPORT_PASSWORD: S.password };
const creds = { password: S.password, ca: S.ca, identity: S.identity, knownHosts: S.knownHosts };

async function catalogTags(url: string): Promise<string[]> {
  const repo = new Repository(await openTransport(parseLocation(url), creds));
  try {
    return ((await repo.readCatalog())?.catalog.releases ?? []).map((e) => e.tag).sort();
  } finally {
    await repo.close();
  }
}

/** Runs the CLI and sends it SIGKILL after `ms` (unless it ended before); resolves with its exit code or 'killed'. */
function killedAfter(args: string[], ms: number, env: Record<string, string> = {}): Promise<number | 'killed'> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), ...args], { env: { ...process.env, ...env }, stdio: 'ignore' });
    const t = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(t);
      resolve(signal === 'SIGKILL' ? 'killed' : (code ?? -1));
    });
  });
}

/** check; when it finds faults, repair and check again. Returns what it took. */
async function checkAfterRepair(url: string, extra: string[] = []): Promise<{ faultsBefore: number; repaired: boolean; clean: boolean; stderr: string }> {
  const first = await tarportInProcess(['check', url, '--json', ...extra], withPw);
  const doc = JSON.parse(first.stdout || '{"faults":[1]}') as { faults?: unknown[]; error?: { code: string } };
  // a run killed before its first write (a sync to a fresh stick) leaves no repository: nothing is
  // visible, which is clean; check says so (NOT_FOUND) rather than call an empty folder a repository
  if (doc.error?.code === 'NOT_FOUND') return { faultsBefore: 0, repaired: false, clean: true, stderr: '' };
  const faultsBefore = first.code === 0 ? 0 : (doc.faults?.length ?? 1);
  if (first.code === 0) return { faultsBefore, repaired: false, clean: true, stderr: '' };
  const rep = await tarportInProcess(['repair', url, ...extra], withPw);
  const second = await tarportInProcess(['check', url, '--json', ...extra], withPw);
  return { faultsBefore, repaired: rep.code === 0, clean: second.code === 0, stderr: first.stderr + rep.stderr + second.stderr };
}

describe('8 producers racing', () => {
  const where: [string, () => Promise<string>, string[]][] = [
    ['a directory', async () => join(await tempDir(), 'repo'), []],
    ['vsftpd', async () => `${S.ftp}/race-${randomBytes(3).toString('hex')}`, remote],
    ['pure-ftpd (no rename over a file)', async () => `${S.ftp2}/race-${randomBytes(3).toString('hex')}`, remote],
    ['SFTP', async () => `${S.sftp}/race-${randomBytes(3).toString('hex')}`, remote],
  ];
  for (const [name, make, flags] of where) {
    it(`on ${name}: 3 trials of 8 pushes of 8 tags at once, every tag in the catalog when they end`, async () => {
      let lost = 0;
      let publishes = 0;
      for (let trial = 0; trial < 3; trial++) {
        const url = await make();
        const tags = Array.from({ length: 8 }, (_, i) => `t${i}`);
        const runs = await Promise.all(tags.map((tag, i) => tarport(['push', '--init', fixture(i % 2 ? 'small-v2.tar' : 'small-v1.tar'), '--to', url, '--name', `race/app:${tag}`, ...flags], withPw)));
        for (const r of runs) expect(r.code, r.stderr).toBe(0);
        publishes += runs.length;
        const inCatalog = await catalogTags(url);
        lost += tags.filter((t) => !inCatalog.includes(t)).length;
        expect(inCatalog, `trial ${trial}`).toEqual(tags);
        const check = await tarportInProcess(['check', url, ...flags], withPw);
        expect(check.code, check.stderr).toBe(0);
      }
      console.log(`racing producers on ${name}: ${publishes} publishes, ${lost} lost or hidden`);
    }, 600_000);
  }
});

describe('kill -9', () => {
  it('push, sync and gc killed at 17 offsets each (51 points): check clean, after repair where it says so', async () => {
    const dir = await tempDir();
    const base = join(dir, 'base');
    expect((await tarportInProcess(['push', '--init', fixture('small-v1.tar'), '--to', base, '--name', 'kill/app:1'])).code).toBe(0);
    const full = join(dir, 'full'); // v1 and v2: gc --keep 1 has garbage to remove
    await cp(base, full, { recursive: true });
    // how long a push takes here, to spread the kills over it
    const t0 = Date.now();
    expect((await tarport(['push', '--init', fixture('small-v2.tar'), '--to', full, '--name', 'kill/app:1'])).code).toBe(0);
    const span = Math.max(400, (Date.now() - t0) * 1.2);
    const stats = { points: 0, killed: 0, repaired: 0, unclean: 0 };
    for (let i = 0; i < 17; i++) {
      const ms = 50 + (i * span) / 17;
      const p = join(dir, `p${i}`);
      await cp(base, p, { recursive: true });
      const s = join(dir, `s${i}`);
      const g = join(dir, `g${i}`);
      await cp(full, g, { recursive: true });
      const runs: [string, number | 'killed'][] = [
        [p, await killedAfter(['push', '--init', fixture('small-v2.tar'), '--to', p, '--name', 'kill/app:1'], ms)],
        [s, await killedAfter(['sync', '--init', full, s], ms)],
        [g, await killedAfter(['gc', g, '--keep', '1', '--grace', '0s'], ms / 2)],
      ];
      for (const [url, r] of runs) {
        stats.points++;
        if (r === 'killed') stats.killed++;
        const c = await checkAfterRepair(url);
        if (c.repaired) stats.repaired++;
        if (!c.clean) stats.unclean++;
        expect(c.clean, `${url} after kill at ${Math.round(ms)} ms: ${c.stderr}`).toBe(true);
      }
    }
    console.log(`kill -9: ${stats.points} points, ${stats.killed} killed mid-run, ${stats.repaired} needed repair, ${stats.unclean} unclean after repair`);
    expect(stats.unclean).toBe(0);
    expect(stats.points).toBeGreaterThanOrEqual(51);
  }, 3_600_000);
});

describe('gc racing publishes', () => {
  // Each offset starts from the same repository (gc/app:a at v1 and v2): it is pushed once, then
  // copied with its timestamps into place for each offset, on the local disk the server serves.
  let prepared: Promise<string> | undefined;
  const prepare = () =>
    (prepared ??= (async () => {
      const dir = join(await tempDir(), 'prepared');
      for (const f of ['small-v1.tar', 'small-v2.tar']) expect((await tarportInProcess(['push', '--init', fixture(f), '--to', dir, '--name', 'gc/app:a'])).code).toBe(0);
      return dir;
    })());
  const home = process.env.TP_SERVER_HOME!;
  const cases: [string, (id: string) => Promise<{ url: string; path: string }>, string[], number][] = [
    ['a directory', async () => { const path = join(await tempDir(), 'repo'); return { url: path, path }; }, [], 30],
    ['vsftpd', async (id) => ({ url: `${S.ftp}/gcrace-${id}`, path: join(home, `gcrace-${id}`) }), remote, 10],
  ];
  async function copyPrepared(path: string): Promise<void> {
    await cp(await prepare(), path, { recursive: true, preserveTimestamps: true });
    if (!path.startsWith(home + '/')) return;
    // the FTP user owns what it serves (the copy is made by this test's user)
    const { uid, gid } = await stat(home);
    await run('chown', ['-R', `${uid}:${gid}`, path]);
  }
  for (const [name, make, flags, offsets] of cases) {
    it(`on ${name}: gc --keep 1 started at ${offsets} offsets into a push that reuses what gc deletes: 0 broken releases`, async () => {
      // how long the push takes, to spread gc's start over it
      const probe = await make(randomBytes(3).toString('hex'));
      await copyPrepared(probe.path);
      const t0 = Date.now();
      expect((await tarport(['push', fixture('small-v1.tar'), '--to', probe.url, '--name', 'gc/app:b', ...flags], withPw)).code).toBe(0);
      const span = Date.now() - t0;
      let broken = 0;
      for (let k = 0; k < offsets; k++) {
        const { url, path } = await make(randomBytes(3).toString('hex'));
        await copyPrepared(path);
        const push = tarport(['push', fixture('small-v1.tar'), '--to', url, '--name', 'gc/app:b', ...flags], withPw);
        await new Promise((r) => setTimeout(r, (k * span) / offsets));
        const gc = await tarport(['gc', url, '--keep', '1', '--grace', '0s', ...flags], withPw);
        const p = await push;
        expect(gc.code, gc.stderr).toBe(0);
        expect(p.code, p.stderr).toBe(0);
        const check = await tarportInProcess(['check', url, ...flags], withPw);
        if (check.code !== 0) broken++;
        expect(check.code, `gc ${Math.round((k * span) / offsets)} ms into the push: ${check.stderr}`).toBe(0);
      }
      console.log(`gc racing publishes on ${name}: ${offsets} offsets over ${span} ms, ${broken} broken`);
    }, 900_000);
  }
});
