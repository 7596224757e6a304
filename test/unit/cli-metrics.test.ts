import { spawn } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../src/archive/index.js';
import { Metrics, parseListen, serveMetrics, writeMetricsFile } from '../../src/cli/metrics.js';
import { ROOT, SMALL, tarport, tarportInProcess, tempDir } from '../helpers.js';

/** promtool (Debian's prometheus package) reads the text on stdin; its exit code and its words. */
function promtool(text: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (c) => (output += c));
    p.stderr.on('data', (c) => (output += c));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, output }));
    p.stdin.end(text);
  });
}

const sample = (text: string, name: string) => {
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
};

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe('Metrics', () => {
  it('turns agent events into Prometheus text that promtool accepts, names escaped', async () => {
    let now = 1_700_000_000_000;
    const m = new Metrics(() => now);
    m.observePoll({ kind: 'loaded', ref: 'registry.example:5000/team/app:1.4', version: 3, imageId: 'sha256:x', bytesFetched: 1000, runtime: 'docker', platform: 'linux/amd64' });
    now += 5000;
    m.observePoll({ kind: 'refused', ref: 'we"ird\\name:t', version: 2, digest: 'sha256:y', message: 'no', code: 'UNTRUSTED' });
    m.observeWatch({ kind: 'published', file: 'a.tar', releases: [{ ref: 'team/db:2', version: 7, status: 'published' }], uploadedBytes: 500 });
    m.observeWatch({ kind: 'failed', file: 'b.tar', code: 'BAD_INPUT', message: 'x' });
    const text = m.render();
    const check = await promtool(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
    expect(text).toContain('tarport_release_version{name="registry.example:5000/team/app",tag="1.4"} 3\n');
    expect(text).toContain('tarport_release_version{name="team/db",tag="2"} 7\n');
    expect(text).toContain('tarport_failures_total{kind="UNTRUSTED"} 1\n');
    expect(text).toContain('tarport_failures_total{kind="BAD_INPUT"} 1\n');
    expect(text).toContain('tarport_transferred_bytes_total{direction="down"} 1000\n');
    expect(text).toContain('tarport_transferred_bytes_total{direction="up"} 500\n');
    expect(sample(text, 'tarport_last_success_timestamp_seconds')).toBe(1_700_000_005);
    expect(sample(text, 'tarport_last_poll_timestamp_seconds')).toBe(1_700_000_005);
    expect(sample(text, 'tarport_releases_loaded_total')).toBe(1);
    expect(sample(text, 'tarport_releases_published_total')).toBe(1);
  });

  it('a poll round in which one tag failed is no success, though the others were current', () => {
    let now = 1_000_000;
    const m = new Metrics(() => now);
    m.observePoll({ kind: 'round', ok: true });
    now += 60_000;
    m.observePoll({ kind: 'up-to-date', ref: 'team/db:1', version: 4 });
    m.observePoll({ kind: 'refused', ref: 'team/app:2', version: 9, digest: 'sha256:y', message: 'the daemon is down', code: 'DAEMON' });
    m.observePoll({ kind: 'round', ok: false });
    const text = m.render();
    expect(sample(text, 'tarport_last_success_timestamp_seconds')).toBe(1000);
    expect(sample(text, 'tarport_last_poll_timestamp_seconds')).toBe(1060);
  });

  it('a one-shot run that published one archive and failed another is no success', () => {
    const m = new Metrics(() => 5_000_000);
    m.oneShot = true;
    m.observeWatch({ kind: 'published', file: 'a.tar', releases: [{ ref: 'team/db:2', version: 7, status: 'published' }], uploadedBytes: 500 });
    m.observeWatch({ kind: 'failed', file: 'b.tar', code: 'CONNECTION', message: 'lost' });
    m.finished(false);
    const text = m.render();
    expect(text).not.toContain('tarport_last_success_timestamp_seconds');
    expect(sample(text, 'tarport_last_poll_timestamp_seconds')).toBe(5000);
    expect(sample(text, 'tarport_releases_published_total')).toBe(1);
  });

  it('an earlier file seeds counters and the last success, so cron runs add up', () => {
    const a = new Metrics(() => 1000_000);
    a.observePoll({ kind: 'loaded', ref: 'a/b:c', version: 2, imageId: 'i', bytesFetched: 10, runtime: 'docker', platform: 'linux/amd64' });
    a.observePoll({ kind: 'round', ok: true });
    a.failure('CONNECTION');
    const b = new Metrics(() => 2000_000);
    b.seed(a.render());
    b.failure('CONNECTION');
    b.finished(false);
    const text = b.render();
    expect(text).toContain('tarport_failures_total{kind="CONNECTION"} 2\n');
    expect(sample(text, 'tarport_releases_loaded_total')).toBe(1);
    expect(sample(text, 'tarport_last_success_timestamp_seconds')).toBe(1000);
    expect(sample(text, 'tarport_last_poll_timestamp_seconds')).toBe(2000);
    expect(text).toContain('tarport_release_version{name="a/b",tag="c"} 2\n');
  });

  it('the file is replaced by a rename: no temporary file stays, a reader never sees half', async () => {
    const dir = await tempDir();
    const f = join(dir, 'tarport.prom');
    await writeMetricsFile(f, 'x 1\n');
    await writeMetricsFile(f, 'x 2\n');
    expect(await readFile(f, 'utf8')).toBe('x 2\n');
    expect(await readdir(dir)).toEqual(['tarport.prom']);
  });

  it('a fault of the listening server (an accept that failed) is handed to the agent\'s error log, each time, not thrown', async () => {
    const heard: unknown[] = [];
    const server = await serveMetrics({ host: '127.0.0.1', port: 0 }, new Metrics(), (e) => heard.push(e));
    try {
      const accept = Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' });
      expect(() => server.emit('error', accept)).not.toThrow();
      expect(() => server.emit('error', accept)).not.toThrow();
      expect(heard).toHaveLength(2);
      expect(heard[0]).toMatchObject({ code: 'IO', message: '--metrics-listen 127.0.0.1:0: a scrape was not served (accept EMFILE)' });
    } finally {
      server.close();
    }
  });

  it('--metrics-listen takes loopback only', () => {
    expect(parseListen('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(() => parseListen('0.0.0.0:9464')).toThrow('only loopback addresses');
    expect(() => parseListen('127.0.0.1')).toThrow('expected HOST:PORT');
  });
});

describe('metrics from the command line', () => {
  it('push --metrics-file: node_exporter textfile format, counters grow across runs', async () => {
    const dir = await tempDir();
    const [v1, v2] = await writeDemoArchives(dir, undefined, SMALL);
    const prom = join(dir, 'tarport.prom');
    const repo = join(dir, 'repo');
    expect((await tarportInProcess(['push', '--init', v1!, '--to', repo, '--metrics-file', prom])).code).toBe(0);
    expect((await tarportInProcess(['push', '--init', v2!, '--to', repo, '--metrics-file', prom])).code).toBe(0);
    const text = await readFile(prom, 'utf8');
    expect((await promtool(text)).code).toBe(0);
    expect(sample(text, 'tarport_releases_published_total')).toBe(2);
    expect(text).toContain('tarport_release_version{name="tarport-demo/hello",tag="latest"} 2\n');
    expect(sample(text, 'tarport_last_success_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 120);
  });

  it('pull --metrics-file records a failure by kind and keeps no success time it did not have', async () => {
    const dir = await tempDir();
    const prom = join(dir, 'tarport.prom');
    const r = await tarport(['pull', '--from', join(dir, 'nothing'), '--state', join(dir, 'st'), '--metrics-file', prom]);
    expect(r.code).toBe(1);
    const text = await readFile(prom, 'utf8');
    expect((await promtool(text)).code).toBe(0);
    expect(text).toContain('tarport_failures_total{kind="NOT_FOUND"} 1\n');
    expect(sample(text, 'tarport_last_success_timestamp_seconds')).toBeUndefined();
    expect(sample(text, 'tarport_last_poll_timestamp_seconds')).toBeGreaterThan(0);
  });

  it('poll --metrics-listen serves /metrics on loopback while it runs', async () => {
    const dir = await tempDir();
    const port = await freePort();
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'poll', '--from', join(dir, 'nothing'), '--state', join(dir, 'st'), '--interval', '200ms', '--metrics-listen', `127.0.0.1:${port}`], { stdio: 'ignore' });
    try {
      let text = '';
      // up to 30 s: the CLI starts and makes its first round on a machine the other files keep busy
      for (let i = 0; i < 150 && !text.includes('kind="NOT_FOUND"'); i++) {
        await new Promise((r) => setTimeout(r, 200));
        text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '');
      }
      expect(text).toContain('tarport_failures_total{kind="NOT_FOUND"}');
      expect((await promtool(text)).code).toBe(0);
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise((r) => child.on('close', r));
    expect(code).toBe(0);
  });

  it('a metrics address off loopback is a usage error', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'x'), '');
    const r = await tarportInProcess(['poll', '--from', dir, '--state', join(dir, 'st'), '--metrics-listen', '0.0.0.0:9464']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--metrics-listen "0.0.0.0:9464": only loopback addresses');
  });
});
