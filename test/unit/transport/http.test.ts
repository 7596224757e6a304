import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { HttpTransport, type HttpOptions } from '../../../src/transport/http.js';
import { parseLocation } from '../../../src/transport/location.js';
import { startTrickle, type Trickle } from '../../trickle.js';

// The HTTP transport against a server of the test's own; nginx, the caching tier and the mirror
// rules are proven in test/integration/http.test.ts.

let server: Trickle | undefined;
const servers: Server[] = [];
const sockets = new Set<Socket>();
const transports: HttpTransport[] = [];
afterEach(async () => {
  await server?.close();
  server = undefined;
  for (const t of transports.splice(0)) await t.close();
  for (const s of sockets) s.destroy();
  sockets.clear();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

/** An HTTP server of the test's own on loopback (its connections cut when the test ends). */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ port: number; server: Server }> {
  const s = createServer(handler);
  s.on('connection', (c) => (sockets.add(c), c.on('close', () => sockets.delete(c))));
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  servers.push(s);
  return { port: (s.address() as AddressInfo).port, server: s };
}

function open(port: number, opts: HttpOptions = {}): HttpTransport {
  const t = new HttpTransport(parseLocation(`http://127.0.0.1:${port}/repo`) as ConstructorParameters<typeof HttpTransport>[0], opts);
  transports.push(t);
  return t;
}

/** Reads `key` whole (from `offset`) into one buffer; resolves with the error when the read fails. */
async function readAll(t: HttpTransport, key: string, offset = 0): Promise<Buffer | unknown> {
  const chunks: Buffer[] = [];
  return t.readTo(key, (c) => void chunks.push(Buffer.from(c)), { offset }).then(
    () => Buffer.concat(chunks),
    (e: unknown) => e,
  );
}

/** `p`, or `late` when it has not settled within `ms` (a hang fails the test, not the suite). */
function within<T>(p: Promise<T>, ms: number, late: string): Promise<T | string> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<string>((r) => (timer = setTimeout(() => r(late), ms)))]).finally(() => clearTimeout(timer));
}

/** Serves `data` at every path, honouring `bytes=N-` with a 206 as a web server does. */
function ranged(data: Buffer, seen: (string | undefined)[] = []) {
  return (req: IncomingMessage, res: ServerResponse) => {
    seen.push(req.headers.range);
    const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    if (from === 0) res.writeHead(200, { 'content-length': data.length });
    else res.writeHead(206, { 'content-length': data.length - from, 'content-range': `bytes ${from}-${data.length - 1}/${data.length}` });
    res.end(req.method === 'HEAD' ? undefined : data.subarray(from));
  };
}

describe('HTTP close()', () => {
  it('cuts a read still in flight at once, even one that never goes idle, and does not retry it', async () => {
    const s = (server = await startTrickle());
    // an idle timeout (and a window of the speed floor) the test never reaches, and retries: only
    // close() can end the read in time
    const t = new HttpTransport(parseLocation(`http://127.0.0.1:${s.port}/repo`) as ConstructorParameters<typeof HttpTransport>[0], { idleTimeoutMs: 60_000, retries: 5 });
    const reading = t.readTo('blob', () => undefined).then(
      () => 'read to the end',
      (e: unknown) => e,
    );
    await vi.waitFor(() => expect(s.sent()).toBeGreaterThan(2), { timeout: 10_000 }); // the body flows (a byte per 100 ms; slower on a loaded machine)
    const closed = await Promise.race([t.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('close() still waiting after 3 s'), 3000))]);
    expect(closed).toBe('closed');
    const outcome = await Promise.race([reading, new Promise((r) => setTimeout(() => r('the read still running 3 s after close()'), 3000))]);
    expect(outcome).toBeInstanceOf(TarportError);
    expect((outcome as TarportError).code).toBe('ABORTED');
    expect((outcome as TarportError).retryable).toBe(false);
    expect(s.requests()).toBe(1);
  });
});

/** A proxy that answers every CONNECT with `status`, or opens the tunnel when it is 200. */
async function proxyAnswering(status: number): Promise<{ url: string; connects: () => number }> {
  let connects = 0;
  const { port, server: proxy } = await serve((_req, res) => res.writeHead(400).end());
  proxy.on('connect', (req: IncomingMessage, client: Socket) => {
    connects++;
    sockets.add(client);
    if (status !== 200) return void client.end(`HTTP/1.1 ${status} Refused\r\nProxy-Authenticate: Basic realm="p"\r\nContent-Length: 0\r\n\r\n`);
    const [host, to] = (req.url ?? '').split(':');
    const upstream = connect(Number(to), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.pipe(client).pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  return { url: `http://127.0.0.1:${port}`, connects: () => connects };
}

describe('HTTP through a proxy', () => {
  // the origin is never reached through a refused tunnel; NO_PROXY names another host, so the
  // test does not depend on the environment's
  const via = (url: string) => ({ proxy: { httpProxy: url, httpsProxy: url, noProxy: 'elsewhere.invalid' } });

  it.each([
    [407, false, /HTTP 407.*credentials.*USER:PASSWORD@127\.0\.0\.1:/],
    [403, false, /HTTP 403.*NO_PROXY/],
    [502, true, /HTTP 502/],
    [503, true, /HTTP 503/],
  ])('a tunnel refused with %i is a CONNECTION error naming the status (retryable: %s), never ABORTED', async (status, retryable, message) => {
    const p = await proxyAnswering(status);
    const t = open(9, { ...via(p.url), retries: 2 });
    const err = await t.stat('x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('CONNECTION');
    expect((err as TarportError).retryable).toBe(retryable);
    expect((err as TarportError).message).toMatch(message);
    expect((err as TarportError).message).toContain(p.url);
    expect(p.connects()).toBe(retryable ? 3 : 1);
  });

  it('a download through a proxy failing with 5xx is resumed, not taken for a cancel', async () => {
    const p = await proxyAnswering(502);
    const err = await readAll(open(9, { ...via(p.url), retries: 1 }), 'blob');
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('CONNECTION');
    expect((err as TarportError).retryable).toBe(true);
    expect(p.connects()).toBe(2);
  });

  it('takes the proxies it is given and nothing from the environment: an unset one is no proxy, an unset NO_PROXY excludes nothing', async () => {
    const data = randomBytes(1000);
    const origin = await serve(ranged(data));
    const good = await proxyAnswering(200);
    const refusing = await proxyAnswering(403);
    const env = (proxy: string, noProxy: string) => {
      for (const k of ['HTTP_PROXY', 'http_proxy']) vi.stubEnv(k, proxy);
      for (const k of ['NO_PROXY', 'no_proxy']) vi.stubEnv(k, noProxy);
    };
    onTestFinished(() => void vi.unstubAllEnvs());
    // only an https proxy given: an http origin is reached directly, not through HTTP_PROXY
    env(refusing.url, '');
    expect((await open(origin.port, { proxy: { httpsProxy: refusing.url } }).stat('blob'))?.size).toBe(data.length);
    expect(refusing.connects()).toBe(0);
    // no NO_PROXY given: the environment's does not exempt the origin from the proxy given
    env('', '127.0.0.1');
    expect((await open(origin.port, { proxy: { httpProxy: good.url } }).stat('blob'))?.size).toBe(data.length);
    expect(good.connects()).toBe(1);
  });

  it('a proxy that opens the tunnel carries stat and the read', async () => {
    const data = randomBytes(100_000);
    const origin = await serve(ranged(data));
    const p = await proxyAnswering(200);
    const t = open(origin.port, via(p.url));
    expect((await t.stat('blob'))?.size).toBe(data.length);
    expect(((await readAll(t, 'blob')) as Buffer).equals(data)).toBe(true);
    expect(p.connects()).toBeGreaterThanOrEqual(1);
  });
});

describe('HTTP cancel', () => {
  it("a read cut by the caller's signal is still ABORTED, and not retried", async () => {
    const s = (server = await startTrickle());
    const ac = new AbortController();
    const reading = open(s.port, { idleTimeoutMs: 60_000, retries: 5 }).readTo('blob', () => undefined, { signal: ac.signal }).catch((e: unknown) => e);
    await vi.waitFor(() => expect(s.sent()).toBeGreaterThan(2), { timeout: 10_000 });
    ac.abort();
    const err = await within(reading, 5000, 'the read still running 5 s after the abort');
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('ABORTED');
    expect(s.requests()).toBe(1);
  });
});

describe('HTTP speed floor', () => {
  it('a body that trickles (never idle) counts as stalled within a window of the idle timeout: CONNECTION, retryable', async () => {
    const s = (server = await startTrickle()); // a byte every 100 ms: the idle timeout never trips
    const err = await within(readAll(open(s.port, { idleTimeoutMs: 1000, retries: 0 }), 'blob'), 20_000, 'still reading after 20 s');
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('CONNECTION');
    expect((err as TarportError).retryable).toBe(true);
    expect((err as TarportError).message).toMatch(/stalled/);
    expect(s.requests()).toBe(1);
  });

  it('a stalled transfer resumes at the byte where it broke, like a cut', async () => {
    const data = randomBytes(256 << 10);
    const ranges: (string | undefined)[] = [];
    const whole = ranged(data, ranges);
    const { port } = await serve((req, res) => {
      if (req.headers.range) return whole(req, res);
      ranges.push(undefined);
      // the first 1000 bytes at once, then a byte every 50 ms
      res.writeHead(200, { 'content-length': data.length });
      res.write(data.subarray(0, 1000));
      let at = 1000;
      const t = setInterval(() => res.write(data.subarray(at, ++at)), 50);
      res.on('close', () => clearInterval(t));
    });
    const resumes: number[] = [];
    const got = await within(readAll(open(port, { idleTimeoutMs: 1000, retries: 3, onResume: (at) => resumes.push(at) }), 'blob'), 20_000, 'still reading after 20 s');
    expect(Buffer.isBuffer(got) && got.equals(data)).toBe(true);
    expect(ranges[0]).toBeUndefined();
    expect(resumes[0]).toBeGreaterThanOrEqual(1000);
    expect(ranges[1]).toBe(`bytes=${resumes[0]}-`);
  });

  it('a reader that holds a chunk for several windows is not taken for a stall (only network time counts)', async () => {
    const data = randomBytes(2 << 20);
    let requests = 0;
    const { port } = await serve((req, res) => (requests++, ranged(data)(req, res)));
    const chunks: Buffer[] = [];
    // a second: the rest of the 2 MiB must not be taken for a stall when a busy machine pauses
    const IDLE = 1_000;
    await open(port, { idleTimeoutMs: IDLE, retries: 0 }).readTo('blob', (c) => {
      chunks.push(Buffer.from(c));
      // the first chunk waits for four windows: a disk that is busy, a reader that pauses
      if (chunks.length === 1) return new Promise((r) => setTimeout(r, 4 * IDLE));
    });
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    expect(requests).toBe(1);
  });
});

describe('HTTP Content-Encoding', () => {
  it('asks for identity on every request: HEAD, GET and the listing', async () => {
    const asked: (string | undefined)[] = [];
    const data = Buffer.from('{"hello":"mirror"}\n');
    const { port } = await serve((req, res) => {
      asked.push(req.headers['accept-encoding']);
      if (req.url?.endsWith('/')) return void res.writeHead(200, { 'content-type': 'application/json' }).end('[{"name":"x","type":"file","size":1}]');
      ranged(data)(req, res);
    });
    const t = open(port);
    expect((await t.stat('x'))?.size).toBe(data.length);
    expect(((await readAll(t, 'x')) as Buffer).equals(data)).toBe(true);
    const names: string[] = [];
    for await (const e of t.list('d')) names.push(e.name);
    expect(names).toEqual(['x']);
    expect(asked).toEqual(['identity', 'identity', 'identity']);
  });

  it('refuses an encoded answer, naming the encoding and the server, without retrying; an encoded 404 is still not found', async () => {
    const data = randomBytes(10_000);
    const gz = gzipSync(data);
    let requests = 0;
    const { port } = await serve((req, res) => {
      requests++;
      if (req.url?.endsWith('/gone')) return void res.writeHead(404, { 'content-encoding': 'gzip' }).end(gzipSync('not here'));
      res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': gz.length, via: '1.1 squid-cache' });
      res.end(req.method === 'HEAD' ? undefined : gz);
    });
    const t = open(port, { retries: 3 });
    const err = await readAll(t, 'blob');
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('CONNECTION');
    expect((err as TarportError).retryable).toBe(false);
    expect((err as TarportError).message).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}.*Content-Encoding: gzip.*squid-cache`));
    expect(requests).toBe(1);
    await expect(t.stat('blob')).rejects.toMatchObject({ code: 'CONNECTION', retryable: false });
    expect(await t.stat('gone')).toBeUndefined();
  });
});

describe('HTTP 206 answers', () => {
  const data = randomBytes(3000);

  it('a 206 that ends before the file is a cut: the read goes on from its end', async () => {
    const ranges: (string | undefined)[] = [];
    const { port } = await serve((req, res) => {
      ranges.push(req.headers.range);
      // a cache that answers a range with 1000 bytes at most
      const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1]);
      const to = Math.min(from + 999, data.length - 1);
      res.writeHead(206, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${to}/${data.length}` });
      res.end(data.subarray(from, to + 1));
    });
    const resumes: number[] = [];
    const got = await readAll(open(port, { retries: 5, onResume: (at) => resumes.push(at) }), 'blob', 100);
    expect(Buffer.isBuffer(got) && got.equals(data.subarray(100))).toBe(true);
    expect(ranges).toEqual(['bytes=100-', 'bytes=1100-', 'bytes=2100-']);
    expect(resumes).toEqual([1100, 2100]);
  });

  it('a 206 whose body is shorter than its range resumes after what came; an unknown total (*) is taken by the length', async () => {
    const ranges: (string | undefined)[] = [];
    const { port } = await serve((req, res) => {
      ranges.push(req.headers.range);
      const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1]);
      // the first answer names the whole rest but holds 500 bytes (a length that agrees with them)
      const to = ranges.length === 1 ? from + 499 : data.length - 1;
      res.writeHead(206, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${data.length - 1}/*` });
      res.end(data.subarray(from, to + 1));
    });
    const got = await readAll(open(port, { retries: 2 }), 'blob', 100);
    expect(Buffer.isBuffer(got) && got.equals(data.subarray(100))).toBe(true);
    expect(ranges).toEqual(['bytes=100-', 'bytes=600-']);
  });

  it('a 206 to a request that asked for no range is refused unless it holds the whole file', async () => {
    let range = `bytes 0-99/${data.length}`;
    let requests = 0;
    const { port } = await serve((_req, res) => {
      requests++;
      const [, a, b] = /^bytes (\d+)-(\d+)/.exec(range)!;
      res.writeHead(206, { 'content-length': Number(b) - Number(a) + 1, 'content-range': range });
      res.end(data.subarray(Number(a), Number(b) + 1));
    });
    const t = open(port, { retries: 3 });
    const err = await readAll(t, 'blob');
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('IO');
    expect((err as TarportError).retryable).toBe(false);
    expect((err as TarportError).message).toContain('no Range');
    expect(requests).toBe(1);
    range = `bytes 0-${data.length - 1}/${data.length}`;
    const whole = await readAll(t, 'blob');
    expect(Buffer.isBuffer(whole) && whole.equals(data)).toBe(true);
  });

  it.each([
    ['starts elsewhere', 'bytes 50-2999/3000'],
    ['ends past its total', 'bytes 100-3000/3000'],
    ['ends before it starts', 'bytes 100-99/3000'],
    ['is not one range', 'bytes 100-2999'],
  ])('a 206 whose Content-Range %s is refused, not retried', async (_what, range) => {
    let requests = 0;
    const { port } = await serve((_req, res) => {
      requests++;
      res.writeHead(206, { 'content-length': 2900, 'content-range': range });
      res.end(data.subarray(100));
    });
    const err = await readAll(open(port, { retries: 3 }), 'blob', 100);
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('IO');
    expect((err as TarportError).retryable).toBe(false);
    expect((err as TarportError).message).toContain(range);
    expect(requests).toBe(1);
  });
});
