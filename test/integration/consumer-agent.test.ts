import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { poll, pull, type PollEvent } from '../../src/consumer/index.js';
import { DockerClient, DockerRuntime } from '../../src/runtime/index.js';
import { Repository } from '../../src/repo/index.js';
import { CountingTransport, FileTransport, openTransport, parseLocation } from '../../src/transport/index.js';
import { ROOT, docker, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';
import { CuttingProxy } from '../proxy.js';

// The consumer agent against the real consumer daemon: `tarport poll` as a user runs it.

const env = realEnv();

/** Starts `tarport poll …` and collects its JSON events. */
function startPoll(args: string[], dockerHost = env.consumer): { child: ChildProcess; events: PollEvent[]; waitFor: (p: (e: PollEvent) => boolean, ms?: number) => Promise<PollEvent>; exited: Promise<number> } {
  const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'poll', '--json', ...args], { env: { ...process.env, DOCKER_HOST: dockerHost }, stdio: ['ignore', 'pipe', 'pipe'] });
  const events: PollEvent[] = [];
  const waiters: { p: (e: PollEvent) => boolean; resolve: (e: PollEvent) => void }[] = [];
  let buf = '';
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const e = JSON.parse(buf.slice(0, i)) as PollEvent;
      buf = buf.slice(i + 1);
      events.push(e);
      for (const w of [...waiters]) if (w.p(e)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(e);
    }
  });
  const exited = new Promise<number>((r) => child.on('close', (code) => r(code ?? -1)));
  const waitFor = (p: (e: PollEvent) => boolean, ms = 60_000) => {
    const seen = events.find(p);
    if (seen) return Promise.resolve(seen);
    return new Promise<PollEvent>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no such event within ${ms} ms; events: ${JSON.stringify(events.slice(-5))}; stderr: ${stderr.slice(-500)}`)), ms);
      waiters.push({ p, resolve: (e) => (clearTimeout(t), resolve(e)) });
    });
  };
  return { child, events, waitFor, exited };
}

const loaded = (ref: string, version: number) => (e: PollEvent) => e.kind === 'loaded' && e.ref === ref && e.version === version;

describe('consumer agent: tarport poll', () => {
  it('loads v1, then v2 soon after it is pushed; leaves unsubscribed names alone; runs the hook; stops on SIGTERM', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const hookLog = join(dir, 'hook.log');
    const tag = `tarport-test/agent-${randomBytes(3).toString('hex')}`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', `${tag}:live`])).code).toBe(0);
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', `${tag}-other:1`])).code).toBe(0);
    const hook = join(dir, 'restart-service.sh');
    await writeFile(hook, `#!/bin/sh\necho "$1 $2 $TARPORT_REF" >> ${hookLog}\n`, { mode: 0o755 });
    const p = startPoll([tag, '--from', repo, '--state', join(dir, 'state'), '--interval', '1s', '--hook', hook]);
    await p.waitFor(loaded(`${tag}:live`, 1));
    expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo, '--name', `${tag}:live`])).code).toBe(0);
    const pushedAt = Date.now();
    await p.waitFor(loaded(`${tag}:live`, 2), 30_000);
    // polled every second: 25 s leaves room for a machine that runs other lanes beside this one
    expect(Date.now() - pushedAt).toBeLessThan(25_000);
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', `${tag}:live`, '/bin/cat', '/app/v2.txt')).toBe('hello from v2');
    await expect(docker('consumer', 'image', 'inspect', `${tag}-other:1`)).rejects.toThrow();
    await p.waitFor((e) => e.kind === 'hook' && e.version === 2);
    expect((await readFile(hookLog, 'utf8')).trim().split('\n')).toEqual([`${tag}:live 1 ${tag}:live`, `${tag}:live 2 ${tag}:live`]);
    const stopAt = Date.now();
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(Date.now() - stopAt).toBeLessThan(8000); // within the launcher's 5 s, and the time to see it
  });

  it('an idle poll costs one small request, the same for 10 and 1,000 releases', async () => {
    const costs: { requests: number; bytesRead: number }[] = [];
    for (const n of [10, 1000]) {
      const dir = await tempDir();
      const repoDir = join(dir, 'repo');
      await manyReleases(repoDir, n);
      const counting = new CountingTransport(new FileTransport(repoDir));
      const repo = new Repository(counting);
      const d = new DockerRuntime(new DockerClient(env.consumer));
      const state = join(dir, 'state');
      await pull(repo, d, { subscriptions: [{ name: 'tarport-test/many', tag: 't0' }], stateDir: state });
      const before = { ...counting.counters };
      for (let i = 0; i < 5; i++) {
        const r = await pull(repo, d, { subscriptions: [{ name: 'tarport-test/many', tag: 't0' }], stateDir: state, cheap: true });
        expect(r.idle).toBe(true);
      }
      costs.push({ requests: (counting.counters.requests - before.requests) / 5, bytesRead: (counting.counters.bytesRead - before.bytesRead) / 5 });
    }
    expect(costs[0]).toEqual({ requests: 1, bytesRead: 0 });
    expect(costs[1]).toEqual(costs[0]);
  });

  it('over FTP an idle period costs a few hundred bytes a poll (counted by a proxy), and a server that goes away and comes back is picked up again', async () => {
    const ftp = process.env.TP_FTP_URL;
    if (!ftp) throw new Error('run through scripts/test: TP_FTP_URL is not set');
    const sub = `agent-${randomBytes(3).toString('hex')}`;
    const port = Number(/@127\.0\.0\.1:(\d+)/.exec(ftp)![1]);
    const proxy = await new CuttingProxy({ host: '127.0.0.1', port }, [], 'stream').start();
    const url = `${ftp.replace(/:\d+\//, `:${proxy.port}/`)}/${sub}`;
    const password = process.env.TP_FTP_PASSWORD!;
    const push = (file: string, name: string) => tarport(['push', '--init', fixture(file), '--to', `${ftp}/${sub}`, '--name', name], { TARPORT_PASSWORD: password });
    expect((await push('app-v1.tar', 'tarport-test/ftp-agent:1')).code).toBe(0);
    const repo = new Repository(await openTransport(parseLocation(url), { password }));
    const events: PollEvent[] = [];
    const ac = new AbortController();
    const dir = await tempDir();
    const running = poll(repo, new DockerRuntime(new DockerClient(env.consumer)), { subscriptions: [], stateDir: join(dir, 'state'), intervalMs: 300, signal: ac.signal, onEvent: (e) => { events.push(e); if (process.env.TP_DEBUG) console.log(JSON.stringify(e).slice(0, 200)); } });
    const until = async (p: () => boolean, ms = 60_000) => {
      const end = Date.now() + ms;
      while (!p()) {
        if (Date.now() > end) throw new Error(`timed out; events: ${JSON.stringify(events.slice(-5))}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until(() => events.some((e) => e.kind === 'loaded'));
    // idle: count the bytes of ten polls (the full re-read every tenth poll included)
    await until(() => events.filter((e) => e.kind === 'idle').length >= 2);
    const idleBefore = events.filter((e) => e.kind === 'idle').length;
    const bytesBefore = proxy.bytes;
    await until(() => events.filter((e) => e.kind === 'idle').length >= idleBefore + 10);
    const perPoll = (proxy.bytes - bytesBefore) / 10;
    console.log(`idle FTP poll: ${perPoll} bytes on the wire per poll`);
    expect(perPoll).toBeLessThan(1024);
    // the server goes away: polls fail and say so; it comes back: the next release is loaded
    await proxy.pause();
    await until(() => events.some((e) => e.kind === 'poll-failed'));
    expect((await push('app-v2.tar', 'tarport-test/ftp-agent:1')).code).toBe(0);
    await proxy.resume();
    await until(() => events.some((e) => e.kind === 'loaded' && e.version === 2));
    ac.abort();
    await running;
    await repo.close();
    await proxy.close();
  });

  it('a tampered release between good ones: pull loads the good ones and exits 3; poll skips it until it changes', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const base = `tarport-test/mixed-${randomBytes(3).toString('hex')}`;
    for (const t of ['a', 'b', 'c']) expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', `${base}:${t}`])).code).toBe(0);
    const recB = (await filesBelow(join(repo, 'tarport/releases'))).find((f) => f.includes('/b/'))!;
    const pathB = join(repo, 'tarport/releases', recB);
    await writeFile(pathB, (await readFile(pathB, 'utf8')).replace('"version": 1', '"version": 1 '));
    const r = await tarport(['pull', base, '--from', repo, '--state', join(dir, 'state')], { DOCKER_HOST: env.consumer });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(new RegExp(`refused ${base}:b`));
    expect(r.stderr).toMatch(new RegExp(`loaded ${base}:a`));
    expect(r.stderr).toMatch(new RegExp(`loaded ${base}:c`));
    await expect(docker('consumer', 'image', 'inspect', `${base}:b`)).rejects.toThrow();
    // the agent: refused once, not retried while unchanged
    const p = startPoll([base, '--from', repo, '--state', join(dir, 'state2'), '--interval', '300ms']);
    await p.waitFor((e) => e.kind === 'refused' && e.ref === `${base}:b`);
    await new Promise((res) => setTimeout(res, 2000));
    expect(p.events.filter((e) => e.kind === 'refused').length).toBe(1);
    expect(p.events.filter((e) => e.kind === 'loaded').map((e) => (e as { ref: string }).ref).sort()).toEqual([`${base}:a`, `${base}:c`]);
    p.child.kill('SIGINT');
    expect(await p.exited).toBe(0);
  });

  it('an overlapping run waits briefly, then exits 0 saying the lock is held', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'tarport-test/locked:1'])).code).toBe(0);
    const state = join(dir, 'state');
    const holder = spawn('sleep', ['30']);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(state, { recursive: true });
    await writeFile(join(state, 'lock'), `${holder.pid}\n`);
    const r = await tarport(['pull', '--from', repo, '--state', state], { DOCKER_HOST: env.consumer });
    holder.kill();
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/holds the lock/);
    // a lock left by a process that is gone is taken over
    const again = await tarport(['pull', '--from', repo, '--state', state], { DOCKER_HOST: env.consumer });
    expect(again.code).toBe(0);
    // a fresh state: the first run loaded nothing, so this one loads the release
    expect(again.stderr).toContain('loaded tarport-test/locked:1 v1');
  });

  it('SIGTERM during a load: exits 0 within seconds, the tag is never half there, the next run completes it', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const tag = `tarport-test/term-${randomBytes(3).toString('hex')}:1`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', tag])).code).toBe(0);
    const p = startPoll(['--from', repo, '--state', join(dir, 'state'), '--interval', '1s']);
    await p.waitFor((e) => e.kind === 'loading');
    const t = Date.now();
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(Date.now() - t).toBeLessThan(8000); // within the launcher's 5 s, and the time to see it
    const id = await docker('consumer', 'image', 'inspect', '-f', '{{.Id}}', tag).catch(() => undefined);
    const expected = await docker('producer', 'image', 'inspect', '-f', '{{.Id}}', 'tarport-fixture/app:1');
    if (id !== undefined) expect(id).toBe(expected); // complete, or not there at all
    const r = await tarport(['pull', '--from', repo, '--state', join(dir, 'state')], { DOCKER_HOST: env.consumer });
    expect(r.code, r.stderr).toBe(0);
    expect(await docker('consumer', 'image', 'inspect', '-f', '{{.Id}}', tag)).toBe(expected);
  });

  it('--keep-images 0 keeps an earlier image while the user has a name on it, and removes it once none is left', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const suffix = randomBytes(3).toString('hex');
    const tag = `tarport-test/keep-${suffix}:1`;
    const guard = `tarport-test/keep-guard-${suffix}:1`;
    const state = join(dir, 'state');
    // v1 imported from a root file system: an image ID of its own, no other test's image
    expect((await tarport(['push', '--init', fixture('app-export.tar'), '--to', repo, '--name', tag])).code).toBe(0);
    expect((await tarport(['pull', '--from', repo, '--state', state], { DOCKER_HOST: env.consumer })).code).toBe(0);
    const v1 = await docker('consumer', 'image', 'inspect', '-f', '{{.Id}}', tag);
    await docker('consumer', 'tag', v1, guard);
    expect((await tarport(['push', fixture('app-v1.tar'), '--to', repo, '--name', tag, '--compress', 'none'])).code).toBe(0);
    const kept = await tarport(['pull', '--from', repo, '--state', state, '--keep-images', '0'], { DOCKER_HOST: env.consumer });
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stderr).toContain(`kept ${v1.slice(0, 19)}, an earlier image of ${tag}: it is still named ${guard}; tried again on later runs`);
    expect(await docker('consumer', 'image', 'inspect', '-f', '{{.Id}}', guard)).toBe(v1);
    // the user's name moved to another image (not removed: the daemon would delete v1 with its last
    // name): the next run removes v1, though the tag itself is up to date
    await docker('consumer', 'tag', tag, guard);
    const removed = await tarport(['pull', '--from', repo, '--state', state, '--keep-images', '0'], { DOCKER_HOST: env.consumer });
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stderr).toContain(`removed ${v1.slice(0, 19)}, an earlier image of ${tag}`);
    expect(await docker('consumer', 'image', 'inspect', '-f', '{{.Id}}', v1).catch(() => 'gone')).toBe('gone');
    await docker('consumer', 'rmi', guard, tag); // v2 is the fixture's image, held under other names too
  });
});

/** A repository with n releases (one version each of n tags) of the small demo image. */
async function manyReleases(dir: string, n: number): Promise<void> {
  const { writeDemoArchives } = await import('../../src/archive/index.js');
  const { publishArchive, DEFAULT_CATALOG_TTL_MS } = await import('../../src/producer/index.js');
  const repo = new Repository(new FileTransport(dir));
  const [v1] = await writeDemoArchives(await tempDir());
  await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'tarport-test/many', tag: 't0' } });
  const first = (await repo.readCatalog())!.catalog.releases[0]!;
  const { record } = await repo.readRecord(first, first);
  const tx = await repo.begin();
  try {
    for (let i = 1; i < n; i++) await tx.writeRecord({ ...record, tag: `t${i}` });
    await tx.publishCatalog({ ttlMs: DEFAULT_CATALOG_TTL_MS });
  } finally {
    await tx.end();
  }
}

describe('consumer agent: transient failures are retried, never skipped', () => {
  it('a daemon that is down for a few seconds: each failure logged as a retry, never skipped; the release loads once it is back', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const tag = `tarport-test/outage-${randomBytes(3).toString('hex')}`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', `${tag}:1`])).code).toBe(0);
    // the daemon as poll sees it: a socket of the test's own, forwarded to the real one while "up"
    const sock = join(dir, 'docker.sock');
    const conns = new Set<Socket>();
    const proxy = createServer((c) => {
      const up = connect(env.consumer.replace(/^unix:\/\//, ''));
      conns.add(c).add(up);
      c.pipe(up).pipe(c);
      for (const x of [c, up]) x.on('error', () => undefined).on('close', () => (c.destroy(), up.destroy()));
    });
    const p = startPoll([tag, '--from', repo, '--state', join(dir, 'state'), '--interval', '30s'], `unix://${sock}`);
    try {
      // down: nothing listens at the socket
      await p.waitFor((e) => e.kind === 'retrying' && e.ref === `${tag}:1` && e.code === 'DAEMON');
      await new Promise((r) => setTimeout(r, 4000));
      const upAt = Date.now();
      await new Promise<void>((r) => proxy.listen(sock, r));
      await p.waitFor(loaded(`${tag}:1`, 1), 60_000);
      // the pause after failures grows from 1 s, but stays far below the 30 s interval
      expect(Date.now() - upAt).toBeLessThan(20_000);
      const retries = p.events.filter((e) => e.kind === 'retrying');
      expect(retries.length).toBeGreaterThanOrEqual(2);
      expect(retries.every((e) => e.kind === 'retrying' && e.message.includes('Docker daemon'))).toBe(true);
      expect(p.events.filter((e) => e.kind === 'skipping')).toEqual([]);
    } finally {
      p.child.kill('SIGTERM');
      await p.exited;
      for (const c of conns) c.destroy();
      proxy.close();
    }
  });
});
