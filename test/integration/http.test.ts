import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pull } from '../../src/consumer/index.js';
import type { Runtime } from '../../src/runtime/index.js';
import { isTarportError } from '../../src/errors.js';
import { Repository } from '../../src/repo/index.js';
import { HttpTransport } from '../../src/transport/http.js';
import { openTransport, parseLocation, type Transport } from '../../src/transport/index.js';
import { docker, emptyDaemon, fixture, tarport, tempDir } from '../helpers.js';
import { CuttingProxy } from '../proxy.js';

// The HTTP(S) transport against nginx as scripts/test starts it from contrib/nginx/*.conf (the
// configs docs/mirror.md gives): an HTTPS origin serving TP_WWW_ROOT with the servers' CA, and a
// caching tier in front of it over plain HTTP. Fakes of the test's own only where a real server
// cannot be made to misbehave on cue (a silent link, a redirect to http).

function env() {
  const need = ['TP_WWW_ROOT', 'TP_HTTPS_URL', 'TP_HTTP_CACHE_URL', 'TP_NGINX_ORIGIN_LOG', 'TP_NGINX_CACHE_LOG', 'TP_FTPS_CA'] as const;
  const missing = need.filter((k) => !process.env[k]);
  if (missing.length > 0) throw new Error(`run the suite through scripts/test: it starts nginx (${missing.join(', ')} not set)`);
  return Object.fromEntries(need.map((k) => [k, process.env[k]!])) as Record<(typeof need)[number], string>;
}

const E = env();
const opened: Transport[] = [];
const servers: Server[] = [];

afterAll(async () => {
  for (const t of opened) await t.close().catch(() => undefined);
  for (const s of servers) s.close();
});

/** A fresh folder under the origin's root, and the file names in it served by nginx. */
async function seeded(files: Record<string, Buffer>): Promise<string> {
  const sub = `h-${randomBytes(4).toString('hex')}`;
  for (const [key, data] of Object.entries(files)) {
    const path = join(E.TP_WWW_ROOT, sub, ...key.split('/'));
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, data);
  }
  return sub;
}

async function open(url: string, opts: { ca?: string; idleTimeoutMs?: number; onResume?: (at: number) => void } = { ca: E.TP_FTPS_CA }): Promise<Transport> {
  const t = await openTransport(parseLocation(url), opts);
  opened.push(t);
  return t;
}

async function readAll(t: Transport, key: string, offset = 0): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await t.read(key, { offset })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function readToAll(t: Transport, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await t.readTo(key, (c) => void chunks.push(Buffer.from(c)));
  return Buffer.concat(chunks);
}

const big = randomBytes(6 << 20);
const small = Buffer.from('{"hello":"mirror"}\n');

describe.each([
  ['origin (https, nginx)', () => E.TP_HTTPS_URL],
  ['caching tier (http, nginx proxy_cache)', () => E.TP_HTTP_CACHE_URL],
])('read-only transport contract: %s', (_name, base) => {
  it('reads whole, from an offset and into a sink; stats sizes; a missing key is undefined', async () => {
    const sub = await seeded({ 'blobs/sha256/big': big, 'tarport/catalog.json': small });
    const t = await open(`${base()}/${sub}`);
    expect((await t.stat('blobs/sha256/big'))?.size).toBe(big.length);
    expect((await t.stat('tarport/catalog.json'))?.isDir).toBe(false);
    expect(await t.stat('blobs/sha256/nope')).toBeUndefined();
    expect((await readAll(t, 'blobs/sha256/big')).equals(big)).toBe(true);
    expect((await readAll(t, 'blobs/sha256/big', 1_234_567)).equals(big.subarray(1_234_567))).toBe(true);
    expect((await readToAll(t, 'tarport/catalog.json')).equals(small)).toBe(true);
    await expect(t.read('blobs/sha256/nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('lists one level from the JSON listing; a missing folder lists nothing', async () => {
    const sub = await seeded({ 'd/x': small, 'd/sub/y': small });
    const t = await open(`${base()}/${sub}`);
    const names: string[] = [];
    for await (const e of t.list('d')) names.push(`${e.name}${e.isDir ? '/' : ''}`);
    expect(names.sort()).toEqual(['sub/', 'x']);
    const none: string[] = [];
    for await (const e of t.list('nope')) none.push(e.name);
    expect(none).toEqual([]);
  });

  it('refuses every write, rename and remove as a read-only location (usage, not retried)', async () => {
    const sub = await seeded({ x: small });
    const t = await open(`${base()}/${sub}`);
    await expect(t.write('y', { file: '/dev/null' })).rejects.toMatchObject({ code: 'USAGE', retryable: false });
    await expect(t.rename('x', 'z')).rejects.toMatchObject({ code: 'USAGE' });
    await expect(t.remove('x')).rejects.toMatchObject({ code: 'USAGE' });
    expect(t.capabilities.readOnly).toBe(true);
  });
});

describe('faults', () => {
  it('a download cut twice resumes at the byte where it broke (Range) and delivers every byte once', async () => {
    const sub = await seeded({ blob: big });
    const port = Number(new URL(E.TP_HTTPS_URL).port);
    const proxy = await new CuttingProxy({ host: '127.0.0.1', port }, [big.length * 0.3, big.length * 0.7], 'stream').start();
    const resumes: number[] = [];
    const t = await open(`https://127.0.0.1:${proxy.port}/${sub}`, { ca: E.TP_FTPS_CA, onResume: (at) => resumes.push(at) });
    const got = await readToAll(t, 'blob');
    await proxy.close();
    expect(proxy.cuts).toBe(2);
    expect(resumes.filter((r) => r > 0).length).toBe(2);
    expect(got.equals(big)).toBe(true);
    expect(proxy.bytes).toBeLessThan(big.length * 1.1);
  });

  it('a silent link is dropped after the idle timeout and the read resumes on a new connection', async () => {
    const data = randomBytes(1 << 20);
    const IDLE = 2000;
    let requests = 0;
    let stalledAt = 0;
    const port = await fakeServer((req, res) => {
      requests++;
      const range = /bytes=(\d+)-/.exec(req.headers.range ?? '');
      if (!range) {
        // headers and half the body, then nothing: both sockets stay open
        res.writeHead(200, { 'content-length': data.length });
        res.write(data.subarray(0, data.length / 2), () => (stalledAt = Date.now()));
        return;
      }
      const from = Number(range[1]);
      res.writeHead(206, { 'content-length': data.length - from, 'content-range': `bytes ${from}-${data.length - 1}/${data.length}` });
      res.end(data.subarray(from));
    });
    const resumes: number[] = [];
    let resumedAt = 0;
    const t = await open(`http://127.0.0.1:${port}/repo`, {
      idleTimeoutMs: IDLE,
      onResume: (at) => {
        resumes.push(at);
        resumedAt = Date.now();
      },
    });
    const got = await readToAll(t, 'blob');
    expect(got.equals(data)).toBe(true);
    expect(requests).toBe(2);
    expect(resumes).toEqual([data.length / 2]);
    // from the moment the server went silent: found after one idle timeout, resumed within two
    console.log(`http stall to resume: ${resumedAt - stalledAt} ms (idle timeout ${IDLE} ms)`);
    expect(stalledAt).toBeGreaterThan(0);
    expect(resumedAt - stalledAt).toBeGreaterThanOrEqual(IDLE - 100);
    expect(resumedAt - stalledAt).toBeLessThan(2 * IDLE);
  });

  it('a redirect from https to http is refused, never followed; a redirect within https is followed', async () => {
    const sub = await seeded({ 'tarport/catalog.json': small });
    const t = await open(`${E.TP_HTTPS_URL}/${sub}`);
    // nginx redirects a folder without its slash to the folder with it: followed, and a folder
    expect((await t.stat('tarport'))?.isDir).toBe(true);
    let plainHits = 0;
    const plain = await fakeServer((_req, res) => {
      plainHits++;
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
    const dir = join(E.TP_FTPS_CA, '..');
    const tls = { key: await readFile(join(dir, 'ftps.key')), cert: await readFile(join(dir, 'ftps.crt')) };
    const secure = await fakeServer((_req, res) => {
      res.writeHead(302, { location: `http://127.0.0.1:${plain}/x` });
      res.end();
    }, tls);
    const down = await open(`https://127.0.0.1:${secure}/r`);
    const err = await down.stat('x').catch((e: unknown) => e);
    expect(isTarportError(err, 'UNTRUSTED')).toBe(true);
    expect((err as Error).message).toContain('redirects to http:');
    expect(plainHits).toBe(0);
    // plain http may go on to plain http, never to another scheme
    const ftpPort = await fakeServer((_req, res) => {
      res.writeHead(301, { location: 'ftp://127.0.0.1/x' });
      res.end();
    });
    const toFtp = await open(`http://127.0.0.1:${ftpPort}/r`, {});
    await expect(toFtp.stat('x')).rejects.toMatchObject({ code: 'UNTRUSTED' });
  });

  it('an https server whose certificate does not verify is refused without --ca, never retried', async () => {
    const sub = await seeded({ 'tarport/catalog.json': small });
    const t = await open(`${E.TP_HTTPS_URL}/${sub}`, {});
    const err = await t.stat('tarport/catalog.json').catch((e: unknown) => e);
    expect(isTarportError(err, 'UNTRUSTED')).toBe(true);
    expect((err as Error).message).toContain('--ca');
    const r = await tarport(['ls', `${E.TP_HTTPS_URL}/${sub}`]);
    expect(r.code).toBe(3);
  });

  it('basic auth goes to the origin it was given for, never to a host a redirect names', async () => {
    const seen: { port: string; auth?: string }[] = [];
    const other = await fakeServer((req, res) => {
      seen.push({ port: 'other', ...(req.headers.authorization ? { auth: req.headers.authorization } : {}) });
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
    const first = await fakeServer((req, res) => {
      seen.push({ port: 'first', ...(req.headers.authorization ? { auth: req.headers.authorization } : {}) });
      res.writeHead(302, { location: `http://localhost:${other}/x` });
      res.end();
    });
    // plain http refuses a password outright; the header is sent for a user without one
    expect(() => new HttpTransport({ kind: 'http', host: '127.0.0.1', port: first, user: 'u', path: '/' }, { password: 'secret' })).toThrow(/in clear/);
    const t = new HttpTransport({ kind: 'http', host: '127.0.0.1', port: first, user: 'u', path: '/' });
    opened.push(t);
    expect((await t.stat('x'))?.size).toBe(2);
    expect(seen).toEqual([
      { port: 'first', auth: `Basic ${Buffer.from('u:').toString('base64')}` },
      { port: 'other' },
    ]);
  });
});

describe('a repository served by a web mirror', () => {
  it('push to a directory nginx serves; pull over https and through the caching tier loads a runnable image; an idle poll costs one request and no body', async () => {
    await emptyDaemon('consumer');
    const sub = `repo-${randomBytes(4).toString('hex')}`;
    const dir = join(E.TP_WWW_ROOT, sub);
    const push = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', dir]);
    expect(push.code, push.stderr).toBe(0);
    const state = await tempDir();
    const pulled = await tarport(['pull', '--from', `${E.TP_HTTPS_URL}/${sub}`, '--ca', E.TP_FTPS_CA, '--state', state], { DOCKER_HOST: process.env.TP_SOCK_consumer });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(await docker('consumer', 'run', '--rm', 'tarport-fixture/app:1')).toBe('hello from v1');

    // a second host behind the caching tier, plain http: same image, bytes from the cache
    await emptyDaemon('consumer');
    const state2 = await tempDir();
    const viaCache = await tarport(['pull', '--from', `${E.TP_HTTP_CACHE_URL}/${sub}`, '--state', state2], { DOCKER_HOST: process.env.TP_SOCK_consumer });
    expect(viaCache.code, viaCache.stderr).toBe(0);
    expect(await docker('consumer', 'run', '--rm', 'tarport-fixture/app:1')).toBe('hello from v1');

    // idle polls over https: each one request for the catalog, no body
    const before = (await readFile(E.TP_NGINX_ORIGIN_LOG, 'utf8')).split('\n').length;
    const poll = await tarportFor(8_000, ['poll', '--from', `${E.TP_HTTPS_URL}/${sub}`, '--ca', E.TP_FTPS_CA, '--state', state, '--interval', '1s'], { DOCKER_HOST: process.env.TP_SOCK_consumer });
    expect(poll.code, poll.stderr).toBe(0);
    const lines = (await readFile(E.TP_NGINX_ORIGIN_LOG, 'utf8')).split('\n').slice(before - 1).filter((l) => l.includes(`/${sub}/`));
    // every line is the catalog: the first round of a poll reads it whole (as every tenth does),
    // the idle rounds after it ask with HEAD alone, and no record or object is asked for
    expect(lines.every((l) => l.includes(`/${sub}/tarport/catalog.json `))).toBe(true);
    const idle = lines.filter((l) => l.includes('"HEAD '));
    expect(lines.filter((l) => l.includes('"GET '))).toHaveLength(1);
    expect(idle.length).toBeGreaterThanOrEqual(3);
    for (const l of idle) expect(l.trim().split(' ').at(-2)).toBe('0'); // body bytes sent
  });

  it('ls, check and sync read a mirror (check and sync through the JSON listing); the copy checks clean', async () => {
    const sub = `repo-${randomBytes(4).toString('hex')}`;
    const push = await tarport(['push', '--init', fixture('app-v1.tar'), fixture('app-v2.tar'), '--to', join(E.TP_WWW_ROOT, sub)]);
    expect(push.code, push.stderr).toBe(0);
    const url = `${E.TP_HTTP_CACHE_URL}/${sub}`;
    const ls = await tarport(['ls', url, '--json']);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toContain('tarport-fixture/app');
    const check = await tarport(['check', url]);
    expect(check.code, check.stderr).toBe(0);
    // the folder's URL: the page to a browser, the listing to tarport (contrib/nginx/origin.conf), through the cache too
    const page = await fetch(`${url}/`, { headers: { accept: 'text/html,*/*' } });
    expect(page.headers.get('content-type')).toBe('text/html');
    expect(await page.text()).toMatch(/<title>tarport repository<\/title>[\s\S]*<h2 id="tarport-fixture\/app:/);
    const listing = await fetch(`${url}/`, { headers: { accept: 'application/json' } });
    expect((await listing.json() as { name: string }[]).map((e) => e.name).sort()).toEqual(expect.arrayContaining(['blobs', 'index.html', 'tarport']));
    const stick = join(await tempDir(), 'stick');
    const sync = await tarport(['sync', '--init', url, stick]);
    expect(sync.code, sync.stderr).toBe(0);
    const checkCopy = await tarport(['check', stick]);
    expect(checkCopy.code, checkCopy.stderr).toBe(0);
    const lsCopy = await tarport(['ls', stick, '--json']);
    const { repository: _a, ...copied } = JSON.parse(lsCopy.stdout) as Record<string, unknown>;
    const { repository: _b, ...served } = JSON.parse(ls.stdout) as Record<string, unknown>;
    expect(copied).toEqual(served);
    expect(JSON.stringify(served)).toContain('tarport-fixture/app');
  });

  it('push, watch, gc and sync to an http(s) location are refused before they start (exit 2)', async () => {
    const sub = await seeded({ 'tarport/catalog.json': small });
    const url = `${E.TP_HTTPS_URL}/${sub}`;
    const push = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', url, '--ca', E.TP_FTPS_CA]);
    expect(push.code).toBe(2);
    expect(push.stderr).toContain('read-only');
    const gc = await tarport(['gc', url, '--keep', '1', '--ca', E.TP_FTPS_CA]);
    expect(gc.code).toBe(2);
    const sync = await tarport(['sync', '--init', await tempDir(), url, '--ca', E.TP_FTPS_CA]);
    expect(sync.code).toBe(2);
  });
});

describe('a fleet behind the caching tier', () => {
  it('100 hosts prefetch an update at once (--fetch-only): each verified, the origin serves each object at most twice, idle rounds fetch no object', async () => {
    const sub = `fleet-${randomBytes(4).toString('hex')}`;
    const dir = join(E.TP_WWW_ROOT, sub);
    const url = `${E.TP_HTTP_CACHE_URL}/${sub}`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', dir])).code).toBe(0);
    // every host has v1's objects already (one prefetch, copied): the update is what is new in v2
    const seed = await tempDir();
    const first = await tarport(['pull', '--fetch-only', '--from', url, '--state', seed]);
    expect(first.code, first.stderr).toBe(0);
    const hosts = await Promise.all(Array.from({ length: 100 }, async () => {
      const d = await tempDir();
      await cp(seed, d, { recursive: true });
      return d;
    }));
    expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', dir])).code).toBe(0);
    const objectsOf = async (file: string) => (await readFile(file, 'utf8')).split('\n').filter((l) => l.includes(`/${sub}/blobs/`));
    const originBefore = (await objectsOf(E.TP_NGINX_ORIGIN_LOG)).length;

    // a hundred hosts at once, each with its own connections and cache: in one process, since a
    // hundred Node start-ups would measure the machine, not the fleet (the CLI ran the seed above)
    const docs = await Promise.all(hosts.map((state) => fleetHost(url, state)));
    // v1's objects were in every cache already: listed as complete, none of their bytes fetched
    for (const d of docs) expect(d.fetched).toEqual([{ ref: 'tarport-fixture/app:1', version: 1 }, { ref: 'tarport-fixture/app:2', version: 1 }]);
    // what an update costs one host: the objects v2 has and v1 had not
    const update = docs[0]!.bytesFetched;
    expect(update).toBeGreaterThan(0);
    for (const d of docs) expect(d.bytesFetched).toBe(update);

    const originLines = (await objectsOf(E.TP_NGINX_ORIGIN_LOG)).slice(originBefore);
    const perObject = new Map<string, number>();
    let originBytes = 0;
    for (const l of originLines) {
      const path = / (\/\S+) HTTP/.exec(l)![1]!;
      perObject.set(path, (perObject.get(path) ?? 0) + 1);
      originBytes += Number(l.trim().split(' ').at(-2));
    }
    expect(perObject.size).toBeGreaterThan(0);
    for (const [path, n] of perObject) expect(n, path).toBeLessThanOrEqual(2);
    expect(originBytes).toBeLessThanOrEqual(2 * update);

    // an idle round of the whole fleet: the origin sees no object body
    const idleBefore = (await objectsOf(E.TP_NGINX_ORIGIN_LOG)).length;
    const again = await Promise.all(hosts.map((state) => fleetHost(url, state)));
    for (const d of again) expect(d.bytesFetched).toBe(0);
    expect((await objectsOf(E.TP_NGINX_ORIGIN_LOG)).length).toBe(idleBefore);
  }, 600_000);
});

/** One host of a fleet: a prefetch with a transport and a state folder of its own, no runtime. */
async function fleetHost(url: string, stateDir: string) {
  const transport = await openTransport(parseLocation(url));
  try {
    const noRuntime = new Proxy({} as Runtime, {
      get: () => () => Promise.reject(new Error('a prefetch must not touch the container runtime')),
    });
    return await pull(new Repository(transport), noRuntime, { subscriptions: [], stateDir, fetchOnly: true, lockWaitMs: 30_000 });
  } finally {
    await transport.close();
  }
}

/** An HTTP server of the test's own on loopback; returns its port. */
async function fakeServer(handler: (req: IncomingMessage, res: ServerResponse) => void, tls?: { key: Buffer; cert: Buffer }): Promise<number> {
  const s = tls ? createHttpsServer(tls, handler) : createServer(handler);
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  servers.push(s);
  return (s.address() as AddressInfo).port;
}

/** Runs the CLI and stops it with SIGTERM after `ms` (an agent's run). */
async function tarportFor(ms: number, args: string[], env: Record<string, string | undefined> = {}) {
  const { spawn } = await import('node:child_process');
  const { ROOT } = await import('../helpers.js');
  const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGTERM'), ms);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code: code ?? -1, stdout, stderr };
}
