import { spawn } from 'node:child_process';
import { createReadStream, type ReadStream } from 'node:fs';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../src/archive/index.js';
import { lineStyle, styleLine } from '../../src/cli/output.js';
import { ROOT, SMALL, tarport, tarportInProcess, tempDir } from '../helpers.js';

/** Every stdout line must be one JSON document, and there must be exactly one. */
function oneDocument(stdout: string): Record<string, unknown> {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

/**
 * A folder served over HTTP as a plain web server would: each file, 404 for what is not there.
 * `answer` may take a request first (its path decoded): true when it did (answered, or left hanging).
 */
async function serveFolder(root: string, answer: (path: string, res: ServerResponse) => boolean = () => false): Promise<{ url: string; close: () => void }> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (answer(path, res)) return;
    createReadStream(join(root, path))
      .on('error', () => res.writeHead(404).end())
      .on('open', function (this: ReadStream) {
        res.writeHead(200);
        this.pipe(res);
      });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function twoVersions(): Promise<{ dir: string; repo: string; v1: string; v2: string }> {
  const dir = await tempDir();
  const [v1, v2] = await writeDemoArchives(dir, undefined, SMALL);
  const repo = join(dir, 'repo');
  expect((await tarportInProcess(['push', '--init', v1!, '--to', repo])).code).toBe(0);
  expect((await tarportInProcess(['push', '--init', v2!, '--to', repo])).code).toBe(0);
  return { dir, repo, v1: v1!, v2: v2! };
}

describe('data on stdout, messages on stderr', () => {
  // made once: these tests only read the repository
  let shared: ReturnType<typeof twoVersions> | undefined;
  const readOnly = () => (shared ??= twoVersions());

  it('ls and pull of a repository initialised with nothing pushed yet: empty, exit 0; of a location holding none: NOT_FOUND, exit 1', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    expect((await tarport(['init', repo])).code).toBe(0);
    const ls = await tarport(['ls', repo, '--json']);
    expect([ls.code, JSON.parse(ls.stdout)]).toEqual([0, { repository: `file://${repo}`, releases: [] }]);
    expect(ls.stderr).not.toContain('warning');
    const pull = await tarport(['pull', '--from', repo, '--state', join(dir, 'st'), '--json'], { DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
    expect([pull.code, JSON.parse(pull.stdout)]).toMatchObject([0, { loaded: [], upToDate: [], refused: [] }]);
    expect(pull.stderr).toContain(`file://${repo} is a repository with nothing published yet: nothing to load`);
    const none = await tarport(['ls', join(dir, 'typo')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('holds no catalog (tarport/catalog.json) and no releases');
    // releases but no catalog (a push cut before it, a catalog lost) is no empty repository
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    expect((await tarport(['push', v1!, '--to', repo])).code).toBe(0);
    const { rm } = await import('node:fs/promises');
    await rm(join(repo, 'tarport', 'catalog.json'));
    await rm(join(repo, 'tarport', 'catalogs'), { recursive: true });
    const cut = await tarport(['pull', '--from', repo, '--state', join(dir, 'st')], { DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
    expect(cut.code).toBe(1);
    expect(cut.stderr).toContain(`holds releases but no catalog (tarport/catalog.json): a push cut short, or the catalog lost; run 'tarport repair file://${repo}'`);
  });

  it('the ls table goes to stdout, so grep finds it', async () => {
    const { repo } = await readOnly();
    // a real process: its stdout and stderr are real pipes
    const r = await tarport(['ls', repo]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+TAG\s+VERSION/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 3).join(' '))).toEqual(['tarport-demo/hello latest 1', 'tarport-demo/hello latest 2']);
    expect(r.stderr).not.toContain('tarport-demo/hello');
  });

  it('tarport log NAME:TAG lists every version with date, size, signer, encryption and record digest', async () => {
    const { repo } = await readOnly();
    const r = await tarportInProcess(['log', 'tarport-demo/hello:latest', '--from', repo]);
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^VERSION\s+CREATED\s+SIZE\s+SIGNER\s+ENCRYPTED\s+RECORD/);
    expect(rows[1]).toMatch(/^1\s+\d{4}-\d\d-\d\dT\S+Z\s+[\d.]+ \S+\s+-\s+no\s+sha256:[0-9a-f]{64}\s+-$/);
    expect(rows[2]).toMatch(/^2\s.*sha256:[0-9a-f]{64}\s+-\s+current$/);
    const j = oneDocument((await tarportInProcess(['log', 'tarport-demo/hello:latest', '--from', repo, '--json'])).stdout);
    const versions = j.versions as { version: number; digest: string; current: boolean; signer: string | null; encrypted: boolean }[];
    expect(versions.map((v) => [v.version, v.current, v.signer, v.encrypted])).toEqual([
      [1, false, null, false],
      [2, true, null, false],
    ]);
    expect(versions[0]!.digest).not.toBe(versions[1]!.digest);
  });

  it('log of a tag the repository does not hold says so and exits 1', async () => {
    const { repo } = await readOnly();
    const r = await tarportInProcess(['log', 'tarport-demo/hello:9', '--from', repo, '--json']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('holds no release of tarport-demo/hello:9');
    expect(oneDocument(r.stdout)).toEqual({ error: { code: 'NOT_FOUND', message: expect.stringContaining('tarport-demo/hello:9') } });
  });
});

describe('check --quiet', () => {
  it('exits 3 and still says which fault, as an error line', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    expect((await tarportInProcess(['push', '--init', v1!, '--to', repo])).code).toBe(0);
    const blobs = join(repo, 'blobs', 'sha256');
    const sizes = await Promise.all((await readdir(blobs)).map(async (f) => [f, (await stat(join(blobs, f))).size] as const));
    const [big] = sizes.sort((a, b) => b[1] - a[1])[0]!;
    await writeFile(join(blobs, big), Buffer.alloc(16));
    const r = await tarportInProcess(['check', repo, '--quiet']);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`fault: object sha256:${big}`);
  });
});

describe('a reader of the output that went away', () => {
  it.each(['stdout', 'stderr'] as const)('closed %s: the push is done and its exit code is the work\'s, with no crash on the broken pipe', async (which) => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    const r = await new Promise<{ code: number | null; other: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'push', '--init', v1!, '--to', repo, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      // the reader is gone before tarport writes a byte: each write fails with EPIPE
      child[which].destroy();
      let other = '';
      child[which === 'stdout' ? 'stderr' : 'stdout'].on('data', (c) => (other += c));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, other }));
    });
    expect(r.other).not.toContain('EPIPE');
    expect(r.code).toBe(0);
    const ls = await tarport(['ls', repo]);
    expect(ls.stdout).toContain('tarport-demo/hello');
  });
});

describe('--json prints exactly one document', () => {
  it('push of a bad and a good archive: both side by side, exit code of the failure', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const bad = join(dir, 'bad.tar');
    await writeFile(bad, 'not a tar archive at all'.repeat(100));
    const r = await tarportInProcess(['push', '--init', bad, v1!, '--to', join(dir, 'repo'), '--json']);
    expect(r.code).toBe(2);
    const doc = oneDocument(r.stdout) as { pushed: { archive: string }[]; failed: { archive: string; error: { code: string } }[] };
    expect(doc.pushed.map((p) => p.archive)).toEqual([v1]);
    expect(doc.failed.map((f) => [f.archive, f.error.code])).toEqual([[bad, 'BAD_INPUT']]);
  });

  it('json = true in the config file counts for errors that come before or from it; no command at all is a usage error (exit 2), help asked for is not', async () => {
    const dir = await tempDir();
    const cfg = join(dir, 'j.toml');
    await writeFile(cfg, 'json = true\n');
    const unknownFlag = await tarportInProcess(['ls', dir, '--config', cfg, '--bogus']);
    expect([unknownFlag.code, oneDocument(unknownFlag.stdout)]).toEqual([2, { error: { code: 'USAGE', message: "unknown option '--bogus'" } }]);
    const badEnv = await tarportInProcess(['ls', dir, '--config', cfg], { TARPORT_LATEST: 'maybe' });
    expect([badEnv.code, (oneDocument(badEnv.stdout).error as { code: string }).code]).toEqual([2, 'CONFIG']);
    const none = await tarportInProcess(['--json']);
    expect([none.code, oneDocument(none.stdout)]).toEqual([2, { error: { code: 'USAGE', message: 'a command is needed (the help above lists them)' } }]);
    expect((await tarportInProcess(['keys'])).code).toBe(2);
    expect((await tarportInProcess(['--help'])).code).toBe(0);
    expect((await tarportInProcess(['help'])).code).toBe(0);
  });

  it('given --config twice, the last file decides --json for an early usage error, as commander decides which file is read', async () => {
    const dir = await tempDir();
    const [plain, json] = [join(dir, 'plain.toml'), join(dir, 'json.toml')];
    await writeFile(plain, 'quiet = true\n');
    await writeFile(json, 'json = true\n');
    const lastJson = await tarportInProcess(['ls', dir, '--config', plain, '--config', json, '--bogus']);
    expect([lastJson.code, oneDocument(lastJson.stdout)]).toEqual([2, { error: { code: 'USAGE', message: "unknown option '--bogus'" } }]);
    const lastPlain = await tarportInProcess(['ls', dir, '--config', json, '--config=' + plain, '--bogus']);
    expect([lastPlain.code, lastPlain.stdout]).toEqual([2, '']);
  });

  it('ls and log through a web server without a JSON folder listing (404 for folders, or an HTML page): each tag\'s current release, from the catalog', async () => {
    const dir = await tempDir();
    const [v1, v2] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    expect((await tarport(['push', '--init', v1!, '--to', repo, '--name', 'a/one:1'])).code).toBe(0);
    expect((await tarport(['push', v2!, '--to', repo, '--name', 'a/one:1'])).code).toBe(0);
    expect((await tarport(['push', v2!, '--to', repo, '--name', 'b/two:1'])).code).toBe(0);
    for (const folders of ['404', 'html'] as const) {
      const { url, close } = await serveFolder(repo, (path, res) => {
        if (!path.endsWith('/')) return false;
        if (folders === '404') res.writeHead(404).end();
        else res.writeHead(200, { 'content-type': 'text/html' }).end('<html><a href="x">x</a></html>');
        return true;
      });
      try {
        const ls = await tarport(['ls', url, '--json']);
        expect([folders, ls.code]).toEqual([folders, 0]);
        const noVersions = "offers no folder listing: each tag's current release, from the catalog (older versions are not shown)";
        // a 404 for folders lists as empty (no hosts either, and none are said); an HTML page is no listing at all
        const said = folders === '404' ? [noVersions] : ['offers no folder listing: which hosts loaded each release is not shown', noVersions];
        expect([folders, ls.stderr.split('\n').filter((l) => l).map((l) => l.slice(l.indexOf(url) + url.length - 1).replace(/^\/ /, ''))]).toEqual([folders, said]);
        const rows = (JSON.parse(ls.stdout) as { releases: { name: string; tag: string; version: number; current: boolean }[] }).releases;
        expect([folders, rows.map((r) => [r.name, r.tag, r.version, r.current])]).toEqual([folders, [['a/one', '1', 2, true], ['b/two', '1', 1, true]]]);
        const log = await tarport(['log', 'a/one:1', '--from', url, '--json']);
        expect([folders, log.code, (JSON.parse(log.stdout) as { versions: { version: number }[] }).versions.map((v) => v.version)]).toEqual([folders, 0, [2]]);
      } finally {
        close();
      }
    }
  }, 60_000);

  it('ls of a directory whose listing works lists what releases/ holds: a tag only the catalog still names (its folder removed) is no row, and stops no other', async () => {
    const dir = await tempDir();
    const [v1, v2] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    expect((await tarport(['push', '--init', v1!, '--to', repo, '--name', 'a/one:1'])).code).toBe(0);
    expect((await tarport(['push', v2!, '--to', repo, '--name', 'b/two:1'])).code).toBe(0);
    const { rm } = await import('node:fs/promises');
    await rm(join(repo, 'tarport', 'releases', 'b%2Ftwo'), { recursive: true });
    const ls = await tarport(['ls', repo, '--json']);
    expect([ls.code, (JSON.parse(ls.stdout) as { releases: { name: string }[] }).releases.map((r) => r.name)]).toEqual([0, ['a/one']]);
    expect(ls.stderr).not.toContain('offers no folder listing');
  });

  it('pull --fetch-only stopped by SIGTERM: its one document lists what was fetched before the stop, beside the error', async () => {
    const dir = await tempDir();
    const [v1, v2] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    expect((await tarport(['push', '--init', v1!, '--to', repo, '--name', 'a/one:1'])).code).toBe(0);
    expect((await tarport(['push', v2!, '--to', repo, '--name', 'b/two:1'])).code).toBe(0);
    // the repository over HTTP, with every read of b/two's release left unanswered
    const { url, close } = await serveFolder(repo, (path) => path.includes('b%2Ftwo'));
    try {
      const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'pull', '--fetch-only', '--json', '--from', url, '--state', join(dir, 'st')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let [stdout, stderr] = ['', ''];
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      const closed = new Promise<number | null>((r) => child.on('close', (c) => r(c)));
      await new Promise<void>((r) => child.stderr.on('data', (c: Buffer) => ((stderr += c.toString()), stderr.includes('fetched a/one:1') && r())));
      child.kill('SIGTERM');
      expect(await closed).toBe(143);
      expect(oneDocument(stdout)).toMatchObject({ loaded: [], upToDate: [], refused: [], fetched: [{ ref: 'a/one:1', version: 1 }], error: { code: 'ABORTED' } });
    } finally {
      close();
    }
  }, 60_000);

  it('a usage error, a bad config value and a bad environment value each give one error document', async () => {
    const dir = await tempDir();
    const usage = await tarportInProcess(['push', '--init', '--json']);
    expect(usage.code).toBe(2);
    expect(oneDocument(usage.stdout)).toEqual({ error: { code: 'USAGE', message: "missing required argument 'archive'" } });
    const unknownFlag = await tarportInProcess(['ls', dir, '--bogus'], { TARPORT_JSON: '1' });
    expect(unknownFlag.code).toBe(2);
    expect((oneDocument(unknownFlag.stdout).error as { code: string }).code).toBe('USAGE');
    const cfg = join(dir, 'c.toml');
    await writeFile(cfg, 'keep = ["a"]\n');
    const config = await tarportInProcess(['--json', '--config', cfg, 'ls', dir]);
    expect(config.code).toBe(2);
    expect(oneDocument(config.stdout)).toEqual({ error: { code: 'CONFIG', message: `config file ${cfg}: key "keep": expected a string, not a list` } });
    const env = await tarportInProcess(['--json', 'ls', dir], { TARPORT_LATEST: 'sometimes' });
    expect(env.code).toBe(2);
    expect((oneDocument(env.stdout).error as { message: string }).message).toContain('TARPORT_LATEST="sometimes"');
  });
});

/**
 * Runs the CLI under sh with stderr to a file, as systemd or cron would, and returns that file's text.
 * With `stopAt`, it is sent SIGTERM once its stderr matches (at the latest after 60 s), as a
 * service manager stops an agent: the test waits for what it looks for, not for a fixed time.
 */
async function stderrOf(journal: boolean, wrapper: string, args: string[], stopAt?: RegExp): Promise<{ code: number; stderr: string }> {
  const dir = await tempDir();
  const errFile = join(dir, 'stderr');
  const { readFile } = await import('node:fs/promises');
  // systemd's JOURNAL_STREAM names the device and inode of the stream it gave the service as stderr
  const setup = journal ? 'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); ' : 'unset JOURNAL_STREAM; ';
  const cmd = `${setup}exec ${wrapper} "${process.execPath}" "${join(ROOT, 'bin/tarport.js')}" ${args.map((a) => `'${a}'`).join(' ')}`;
  const child = spawn('sh', ['-c', `exec 2>"${errFile}"; ${cmd}`], { stdio: 'ignore' });
  const closed = new Promise<number>((res) => child.on('close', (c, sig) => res(c ?? (sig ? 128 + (sig === 'SIGTERM' ? 15 : 9) : -1))));
  if (stopAt) {
    let ended = false;
    void closed.then(() => (ended = true));
    for (const t0 = Date.now(); !ended && Date.now() - t0 < 60_000; await new Promise((r) => setTimeout(r, 50))) {
      if (stopAt.test(await readFile(errFile, 'utf8').catch(() => ''))) break;
    }
    child.kill('SIGTERM');
  }
  const code = await closed;
  return { code, stderr: await readFile(errFile, 'utf8') };
}

describe('log lines', () => {
  it('styleLine marks every line: journald priorities, or an ISO time', () => {
    const t = new Date('2026-12-01T10:00:00.000Z');
    expect(styleLine('journal', 'error', 'a\nb', t)).toBe('<3>a\n<3>b\n');
    expect(styleLine('journal', 'warn', 'w', t)).toBe('<4>w\n');
    expect(styleLine('journal', 'info', 'i', t)).toBe('<6>i\n');
    expect(styleLine('timestamped', 'info', 'i', t)).toBe('2026-12-01T10:00:00.000Z i\n');
    expect(styleLine('terminal', 'error', 'e', t)).toBe('e\n');
  });

  it('JOURNAL_STREAM counts only while stderr is the stream it names', () => {
    expect(lineStyle({ JOURNAL_STREAM: '1:1' })).not.toBe('journal');
  });

  it('a one-shot run under systemd writes <3> errors; from cron, timestamped lines', async () => {
    const dir = await tempDir();
    const args = ['pull', '--from', join(dir, 'no-repo'), '--state', join(dir, 'st')];
    const journal = await stderrOf(true, '', args);
    expect(journal.code).toBe(1);
    expect(journal.stderr).toMatch(/^<3>tarport: error: .*holds no catalog/);
    const cron = await stderrOf(false, '', args);
    expect(cron.stderr).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z tarport: error: .*holds no catalog/);
    const usage = await stderrOf(true, '', ['push']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^<3>error: missing required argument 'archive'\n/);
  });

  it('the poll agent logs a start line and level names; under systemd, priorities', async () => {
    const dir = await tempDir();
    const args = ['poll', 'team/app:1', '--from', join(dir, 'no-repo'), '--state', join(dir, 'st'), '--interval', '100ms'];
    // stopped by SIGTERM once a poll has failed: it then exits 0 after its 'stopped' line
    const run = (journal: boolean) => stderrOf(journal, '', args, /poll[- ]failed/);
    const plain = await run(false);
    expect(plain.code).toBe(0);
    const lines = plain.stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ level: 'info', event: 'started', agent: 'poll', interval: '100ms', subscriptions: ['team/app:1'] });
    expect(lines[0]!.msg).toMatch(/^tarport \d+\.\d+\.\d+ poll started: repository file:\/\/.*no-repo, every 100ms, following team\/app:1$/);
    expect(lines[0]!.time).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(lines.find((l) => l.event === 'poll-failed')).toMatchObject({ level: 'error' });
    const journal = await run(true);
    const jl = journal.stderr.trim().split('\n');
    expect(jl[0]).toMatch(/^<6>tarport \S+ poll started: /);
    expect(jl.find((l) => l.includes('poll failed'))).toMatch(/^<3>poll failed: /);
    expect(jl.at(-1)).toBe('<6>stopped');
  });

  it('the watch agent logs its start line too, and --once with --metrics-file leaves the metrics', async () => {
    const dir = await tempDir();
    const { mkdir, readFile } = await import('node:fs/promises');
    await mkdir(join(dir, 'outbox'));
    const prom = join(dir, 'watch.prom');
    const r = await stderrOf(false, '', ['watch', '--init', join(dir, 'outbox'), '--once', '--to', join(dir, 'repo'), '--settle', '100ms', '--metrics-file', prom]);
    expect(r.code).toBe(0);
    const first = JSON.parse(r.stderr.split('\n')[0]!) as Record<string, unknown>;
    expect(first).toMatchObject({ level: 'info', event: 'started', agent: 'watch', interval: '100ms', subscriptions: [join(dir, 'outbox')] });
    expect(await readFile(prom, 'utf8')).toMatch(/^tarport_last_success_timestamp_seconds \d+/m);
  });
});
