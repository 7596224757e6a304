import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constants } from 'node:os';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ROOT, docker, emptyDaemon, filesBelow, fixture, realEnv, tarport, tarportInProcess, tempDir } from '../helpers.js';
import { CuttingProxy } from '../proxy.js';

// SIGTERM to every command that moves bytes, mid-transfer and while its link is silent (the stall
// proxy): each ends within 10 s with the documented code (143 for a one-shot command, 0 for the
// agents, whose normal end is a stop), and what it left is invisible, as after a crash.

const S = {
  url: process.env.TP_SFTP_URL ?? '',
  identity: process.env.TP_SFTP_IDENTITY ?? '',
  knownHosts: process.env.TP_SFTP_KNOWN_HOSTS ?? '',
  home: process.env.TP_SERVER_HOME ?? '',
};
if (!S.url || !S.home) throw new Error('run the suite through scripts/test: it starts the SFTP server (TP_SFTP_URL or TP_SERVER_HOME not set)');
const port = Number(/@127\.0\.0\.1:(\d+)/.exec(S.url)![1]);
const direct = ['--identity', S.identity, '--known-hosts', S.knownHosts];

let source: Promise<string> | undefined;
/**
 * The repository the reading commands (pull, sync, poll) are interrupted in, made once for the file
 * and only read: one release of app-v1, uncompressed, so that each interrupted transfer is long.
 * Written with a push into the folder the SFTP server serves (a push of 14 MB over SFTP took ~8 s,
 * six times over) and handed to the server's user, as if it had written it; the readers reach it
 * over SFTP (the proxy). Its sub-folder name, for url() and S.url.
 */
function readSource(): Promise<string> {
  source ??= (async () => {
    const sub = `sig-src-${randomBytes(4).toString('hex')}`;
    const up = await tarportInProcess(['push', '--init', fixture('app-v1.tar'), '--to', join(S.home, sub), '--name', 'tarport-test/sigread:1', '--compress', 'none']);
    if (up.code !== 0) throw new Error(`the source repository could not be made: ${up.stderr}`);
    const { uid, gid } = await stat(S.home);
    await promisify(execFile)('chown', ['-R', `${uid}:${gid}`, join(S.home, sub)]);
    return sub;
  })();
  return source;
}

/** What `tarport ls` of an SFTP repository prints (run inside this process: no signal involved). */
async function listing(sub: string): Promise<string> {
  const ls = await tarportInProcess(['ls', `${S.url}/${sub}`, '--json', ...direct]);
  return ls.stdout + ls.stderr;
}

async function viaProxy(): Promise<{ proxy: CuttingProxy; url: (sub: string) => string; flags: string[] }> {
  const proxy = await new CuttingProxy({ host: '127.0.0.1', port }, [], 'stream').start();
  const line = (await readFile(S.knownHosts, 'utf8')).trim();
  const kh = join(await tempDir(), 'known_hosts');
  await writeFile(kh, `${line}\n[127.0.0.1]:${proxy.port} ${line.split(/\s+/).slice(1).join(' ')}\n`);
  return { proxy, url: (sub) => `${S.url.replace(/:\d+\//, `:${proxy.port}/`)}/${sub}`, flags: ['--identity', S.identity, '--known-hosts', kh] };
}

interface Run {
  code: number | null;
  ms: number;
  stderr: string;
}

/** Starts the CLI; once `ready()` holds, optionally stalls the link, then sends SIGTERM and times the exit. */
async function interrupt(args: string[], env: Record<string, string>, ready: () => boolean, stall: CuttingProxy | undefined): Promise<Run> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  let done = false;
  void exited.then(() => (done = true));
  const t0 = Date.now();
  while (!ready() && !done && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 20));
  if (done) throw new Error(`${args[0]} ended before it could be interrupted: ${stderr}`);
  if (stall) {
    stall.stallAll();
    await new Promise((r) => setTimeout(r, 500)); // it waits on the silent link now
  }
  const sent = Date.now();
  child.kill('SIGTERM');
  const code = await exited;
  return { code, ms: Date.now() - sent, stderr };
}

const SIZE_STEP = 512 << 10; // the transfer is under way once this much crossed the link

describe('SIGTERM ends every command within 10 s, leaving nothing half-visible', () => {
  const times: string[] = [];
  for (const stalled of [false, true]) {
    const when = stalled ? 'while its link is silent' : 'mid-transfer';

    it(`push ${when}: exit 143, no release visible`, async () => {
      const { proxy, url, flags } = await viaProxy();
      const sub = `sig-${randomBytes(4).toString('hex')}`;
      const r = await interrupt(['push', '--init', fixture('app-v1.tar'), '--to', url(sub), '--name', 'tarport-test/sig:1', '--compress', 'none', ...flags], {}, () => proxy.bytes > SIZE_STEP, stalled ? proxy : undefined);
      await proxy.close();
      times.push(`push ${when}: ${r.ms} ms`);
      expect(r.code, r.stderr).toBe(143);
      expect(r.ms).toBeLessThan(10_000);
      expect(r.stderr).toContain('interrupted by SIGTERM');
      expect(await listing(sub)).not.toContain('tarport-test/sig');
    });

    it(`pull ${when}: exit 143, no image loaded, the next pull loads it`, async () => {
      const env = realEnv();
      const sub = await readSource();
      await emptyDaemon('consumer');
      const { proxy, url, flags } = await viaProxy();
      const state = await tempDir();
      const r = await interrupt(['pull', '--from', url(sub), '--state', state, ...flags], { DOCKER_HOST: env.consumer }, () => proxy.bytes > SIZE_STEP, stalled ? proxy : undefined);
      await proxy.close();
      times.push(`pull ${when}: ${r.ms} ms`);
      expect(r.code, r.stderr).toBe(143);
      expect(r.ms).toBeLessThan(10_000);
      expect(await docker('consumer', 'images', '-q', 'tarport-test/sigread')).toBe('');
      const again = await tarport(['pull', '--from', `${S.url}/${sub}`, '--state', state, ...direct], { DOCKER_HOST: env.consumer });
      expect(again.code, again.stderr).toBe(0);
      expect(await docker('consumer', 'images', '-q', 'tarport-test/sigread')).not.toBe('');
    });

    it(`sync ${when}: exit 143, no catalog at the destination`, async () => {
      const sub = await readSource();
      const { proxy, url, flags } = await viaProxy();
      const dst = join(await tempDir(), 'stick');
      const r = await interrupt(['sync', '--init', url(sub), dst, ...flags], {}, () => proxy.bytes > SIZE_STEP, stalled ? proxy : undefined);
      await proxy.close();
      times.push(`sync ${when}: ${r.ms} ms`);
      expect(r.code, r.stderr).toBe(143);
      expect(r.ms).toBeLessThan(10_000);
      // no record, no catalog: only the identity the destination took from its source at the start
      expect((await filesBelow(dst)).filter((f) => f.startsWith('tarport/') && f !== 'tarport/format.json')).toEqual([]);
    });

    it(`poll ${when}: stops with exit 0, no image loaded`, async () => {
      const env = realEnv();
      const sub = await readSource();
      await emptyDaemon('consumer');
      const { proxy, url, flags } = await viaProxy();
      const r = await interrupt(['poll', '--from', url(sub), '--state', await tempDir(), '--interval', '1s', ...flags], { DOCKER_HOST: env.consumer }, () => proxy.bytes > SIZE_STEP, stalled ? proxy : undefined);
      await proxy.close();
      times.push(`poll ${when}: ${r.ms} ms`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.ms).toBeLessThan(10_000);
      expect(await docker('consumer', 'images', '-q', 'tarport-test/sigread')).toBe('');
    });

    it(`watch ${when}: stops with exit 0, the archive stays in the folder, no release visible`, async () => {
      const { proxy, url, flags } = await viaProxy();
      const sub = `sig-${randomBytes(4).toString('hex')}`;
      const drop = await tempDir();
      await mkdir(drop, { recursive: true });
      await copyFile(fixture('app-v1.tar'), join(drop, 'app.tar'));
      const r = await interrupt(['watch', '--init', drop, '--to', url(sub), '--settle', '100ms', '--name', 'tarport-test/sigwatch:1', '--compress', 'none', ...flags], {}, () => proxy.bytes > SIZE_STEP, stalled ? proxy : undefined);
      await proxy.close();
      times.push(`watch ${when}: ${r.ms} ms`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.ms).toBeLessThan(10_000);
      expect(await filesBelow(drop)).toEqual(['app.tar']);
      expect(await listing(sub)).not.toContain('tarport-test/sigwatch');
    });
  }

  it('a second signal ends a command at once', async () => {
    const { proxy, url, flags } = await viaProxy();
    const sub = `sig-${randomBytes(4).toString('hex')}`;
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'push', '--init', fixture('app-v1.tar'), '--to', url(sub), '--name', 'tarport-test/sig2:1', '--compress', 'none', ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    while (proxy.bytes <= SIZE_STEP) await new Promise((r) => setTimeout(r, 20));
    proxy.stallAll();
    // SIGKILL-free: the first signal asks, the second insists. Two different signals, sent together:
    // one signal sent twice merges into one while pending, and with 50 ms between them the orderly
    // stop the first one asks for (every connection cut at once) could end the process before the
    // second came, which then met a process in its last steps and killed it (exit status null)
    child.kill('SIGINT');
    child.kill('SIGTERM');
    const sent = Date.now();
    const code = await exited;
    await proxy.close();
    times.push(`push, second signal: ${Date.now() - sent} ms`);
    // the hard exit ended it, not the orderly stop; which of the two signals came second is the
    // kernel's choice, and the exit status is that one's, as a shell reports it (128 + its number)
    const again = /tarport: (SIGINT|SIGTERM) again: exiting now/.exec(stderr);
    expect(again, stderr).not.toBeNull();
    expect(code, stderr).toBe(128 + constants.signals[again![1] as 'SIGINT' | 'SIGTERM']);
    expect(Date.now() - sent).toBeLessThan(3000); // the hard exit after one signal would take 5 s
    console.log(`SIGTERM to exit: ${times.join('; ')}`);
  });
});
