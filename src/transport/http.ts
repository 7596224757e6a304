import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import { Agent, EnvHttpProxyAgent, Pool, request, type Dispatcher } from 'undici';
import { TarportError, messageOf } from '../errors.js';
import { keySegments } from './keys.js';
import { ListingUnavailableError } from './listing.js';
import { TLS_TRUST_CODES } from './tls.js';
import { resumableInto, sinkStream, type SinkAttempt } from './resume.js';
import { closedByOwner, withRetries } from './retry.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport } from './types.js';

export interface HttpOptions {
  /** Basic auth password for the URL's user; refused over plain http (it would travel in clear). */
  readonly password?: string;
  /** PEM file of a private CA, trusted beside the system's roots. */
  readonly ca?: string;
  /** A connection that sends nothing for this long is dropped and the transfer resumes. */
  readonly idleTimeoutMs?: number;
  readonly retries?: number;
  readonly onResume?: (at: number) => void;
  /** Ends the transport for good (the command's SIGTERM, SIGINT): every connection is dropped at once. */
  readonly signal?: AbortSignal;
  /** Proxies as HTTPS_PROXY, HTTP_PROXY and NO_PROXY give them (read by cli/, the only reader of the environment). */
  readonly proxy?: HttpProxies;
}

export interface HttpProxies {
  readonly httpsProxy?: string;
  readonly httpProxy?: string;
  readonly noProxy?: string;
}

interface HttpLocation {
  readonly kind: 'http' | 'https';
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly path: string;
}

export const DEFAULT_HTTP_IDLE_MS = 30_000;
/** A folder listing is small (names and sizes); a server that sends more is lying. */
const MAX_LISTING_BYTES = 16 << 20;
const MAX_REDIRECTS = 5;
/**
 * The slowest a body may flow: fewer bytes than this rate over a window of the idle timeout count
 * as a stall (curl's --speed-limit/--speed-time). The idle timeout alone measures only the gaps
 * between chunks, so a server sending a byte now and then would hold a pull for ever. 1 KiB/s is
 * below a 9600 baud line and below any link that can move an image at all (a 50 MiB layer would
 * take 14 h); a trickler is bounded by it to a 64 MiB catalog in 18 h per attempt, not decades.
 */
const MIN_BYTES_PER_SECOND = 1024;

/** Undici and Node error codes that mean the link or the server failed, not the request. */
const TRANSIENT_CODES = new Set([
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);


/**
 * A proxy answered the request for a tunnel (CONNECT) with a status other than 200. undici reports
 * that as an abort whose status is only in its message; tunnelPool keeps it as a field instead.
 */
class ProxyRefusal extends Error {
  constructor(
    readonly status: number,
    /** The proxy's origin, without the credentials its URL may carry. */
    readonly proxy: string,
  ) {
    super(`the proxy ${proxy} answered the tunnel request with HTTP ${status}`);
    this.name = 'ProxyRefusal';
  }
}

/** The first `code` along an error's cause chain. */
function errorCode(e: unknown): string | undefined {
  for (let cur = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * A repository served read-only by any web server (https:// and http:// locations), through Node's
 * own HTTP client (undici). Reads resume with Range requests; a silent connection is dropped after
 * the idle timeout and the read resumes; redirects are followed but never from https to http;
 * certificates are always verified (--ca adds a private CA); HTTPS_PROXY, HTTP_PROXY and NO_PROXY
 * are honoured. The read path needs no folder listing; `list` works where the server offers a JSON
 * listing (nginx `autoindex_format json`), which only check, gc-style walks and sync from need.
 */
export class HttpTransport implements Transport {
  readonly capabilities = { atomicRename: false, maxConnections: 6, local: false, readOnly: true } as const;
  readonly location: string;
  private readonly base: URL;
  private readonly dispatcher: Dispatcher;
  private readonly auth: string | undefined;
  private readonly idleMs: number;
  private readonly retries: number;
  /** Closed by its owner: what was still in flight was given up, and nothing more is tried. */
  private closed = false;

  constructor(
    loc: HttpLocation,
    private readonly opts: HttpOptions = {},
  ) {
    const path = loc.path.endsWith('/') ? loc.path : `${loc.path}/`;
    this.base = new URL(`${loc.kind}://${loc.host}:${loc.port}${path.split('/').map(encodeURIComponent).join('/')}`);
    this.location = `${loc.kind}://${loc.user ? `${encodeURIComponent(loc.user)}@` : ''}${loc.host}:${loc.port}${loc.path}`;
    this.idleMs = opts.idleTimeoutMs ?? DEFAULT_HTTP_IDLE_MS;
    this.retries = opts.retries ?? 5;
    if (opts.password !== undefined && !loc.user) {
      throw new TarportError('USAGE', `${this.location}: a password was given but the URL names no user (write ${loc.kind}://USER@${loc.host}/…)`);
    }
    if (loc.user && opts.password !== undefined && loc.kind === 'http') {
      throw new TarportError('USAGE', `${this.location}: basic auth over plain http would send the password in clear; use https://`);
    }
    this.auth = loc.user ? `Basic ${Buffer.from(`${loc.user}:${opts.password ?? ''}`).toString('base64')}` : undefined;
    this.dispatcher = makeDispatcher(opts.ca, this.idleMs, opts.proxy);
    opts.signal?.addEventListener('abort', () => void this.dispatcher.destroy().catch(() => undefined), { once: true });
  }

  private urlOf(key: string): URL {
    return new URL(keySegments(key).map(encodeURIComponent).join('/'), this.base);
  }

  /**
   * One request, redirects followed by hand so that each hop is checked: https never goes to http,
   * and credentials go only to the origin they were given for.
   */
  private async send(method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<{ res: Dispatcher.ResponseData; url: URL }> {
    for (let hop = 0; ; hop++) {
      const auth = this.auth && url.origin === this.base.origin ? { authorization: this.auth } : {};
      // identity only: a cache reads a request without Accept-Encoding as "any", and compressed
      // bytes taken for the file would be reported as tampering (a digest mismatch)
      const res = await request(url, { method, headers: { ...headers, ...auth, 'accept-encoding': 'identity' }, dispatcher: this.dispatcher, signal: signal ?? null, headersTimeout: this.idleMs, bodyTimeout: this.idleMs });
      const location = res.headers.location;
      if (res.statusCode < 300 || res.statusCode >= 400 || res.statusCode === 304 || typeof location !== 'string') {
        await this.refuseEncoded(res, url);
        return { res, url };
      }
      await res.body.dump();
      const next = new URL(location, url);
      if (hop >= MAX_REDIRECTS) throw new TarportError('IO', `${this.location}: more than ${MAX_REDIRECTS} redirects from ${url.pathname}`, { retryable: false });
      if (next.protocol !== 'https:' && (this.base.protocol === 'https:' || next.protocol !== 'http:')) {
        throw new TarportError('UNTRUSTED', `${this.location}: ${url.pathname} redirects to ${next.protocol}//${next.host}, which would weaken the connection; refused`, { retryable: false });
      }
      url = next;
    }
  }

  /**
   * Refuses a success whose body is encoded (gzip, br…) although identity was asked for: its bytes
   * are not the file's. Not retried: the cache or server that ignores Accept-Encoding does so again
   * on the next try; CONNECTION, since the path to the repository is at fault, not its content.
   */
  private async refuseEncoded(res: Dispatcher.ResponseData, url: URL): Promise<void> {
    const encoding = String(res.headers['content-encoding'] ?? '').trim().toLowerCase();
    if (res.statusCode >= 300 || encoding === '' || encoding === 'identity') return;
    await res.body.dump();
    const via = [res.headers.via, res.headers.server].filter((h) => typeof h === 'string').join('; ');
    throw new TarportError(
      'CONNECTION',
      `${this.location}: ${url.host} sent ${url.pathname} with Content-Encoding: ${encoding}${via ? ` (via ${via})` : ''} although tarport asks for identity; configure that server or cache to serve the files as stored`,
      { retryable: false },
    );
  }

  /** Maps a status that is not a success to a typed error (undefined for 404 and 410). */
  private statusError(status: number, what: string): TarportError | undefined {
    if (status === 404 || status === 410) return undefined;
    if (status === 401) return new TarportError('IO', `${what}: authentication failed (HTTP 401); check the user in the URL and TARPORT_PASSWORD or --password-file`, { retryable: false });
    if (status === 403) return new TarportError('IO', `${what}: permission denied (HTTP 403)`, { retryable: false });
    if (status === 408 || status === 429 || status >= 500) return new TarportError('CONNECTION', `${what}: the server answered HTTP ${status}`, { retryable: true });
    return new TarportError('IO', `${what}: the server answered HTTP ${status}`, { retryable: false });
  }

  /** `signal`: the caller's own; only it or the owner's close or signal make an abort a cancel. */
  private classify(e: unknown, what: string, signal?: AbortSignal): TarportError {
    if (e instanceof TarportError) return e;
    if (this.closed) return closedByOwner(what, e);
    if (signal?.aborted || this.opts.signal?.aborted) return new TarportError('ABORTED', `${what}: aborted`, { cause: e, retryable: false });
    if (e instanceof ProxyRefusal) return proxyError(e, what);
    const code = errorCode(e);
    // undici raises abort errors for more than a cancel; with no cancel here, the link failed
    if (code === 'ABORT_ERR' || code === 'UND_ERR_ABORTED' || (e as Error | undefined)?.name === 'AbortError') {
      return new TarportError('CONNECTION', `${what}: the request was broken off (${messageOf(e)})`, { cause: e, retryable: true });
    }
    if (code && TLS_TRUST_CODES.has(code)) {
      return new TarportError('UNTRUSTED', `${what}: the server's TLS certificate is not trusted (${code}); give its CA with --ca FILE`, { cause: e, retryable: false });
    }
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return new TarportError('CONNECTION', `${what}: the server sent nothing for ${this.idleMs / 1000} s (idle timeout)`, { cause: e, retryable: true });
    }
    if (code === 'ENOTFOUND') return new TarportError('CONNECTION', `${what}: host not found`, { cause: e, retryable: false });
    if (code && TRANSIENT_CODES.has(code)) return new TarportError('CONNECTION', `${what}: ${messageOf(e)} (${code})`, { cause: e, retryable: true });
    return new TarportError('IO', `${what}: ${messageOf(e)}`, { cause: e, retryable: false });
  }

  async stat(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    const what = `${this.location}: ${key}`;
    return withRetries(
      async () => {
        const { res, url } = await this.send('HEAD', this.urlOf(key), {}, signal);
        await res.body.dump();
        if (res.statusCode === 404 || res.statusCode === 410) return undefined;
        if (res.statusCode >= 300) throw this.statusError(res.statusCode, what)!;
        const name = key.slice(key.lastIndexOf('/') + 1);
        const modified = res.headers['last-modified'];
        const mtime = typeof modified === 'string' ? new Date(modified) : undefined;
        return { name, isDir: url.pathname.endsWith('/'), size: Number(res.headers['content-length'] ?? 0), ...(mtime && !isNaN(mtime.getTime()) ? { mtime } : {}) };
      },
      { retries: this.retries, classify: (e) => this.classify(e, what, signal), ...(signal ? { signal } : {}) },
    );
  }

  async *list(folder: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    const url = folder === '' ? this.base : new URL(`${keySegments(folder).map(encodeURIComponent).join('/')}/`, this.base);
    const what = `${this.location}: listing of ${folder || '/'}`;
    const entries = await withRetries(() => this.fetchListing(url, what, signal), { retries: this.retries, classify: (e) => this.classify(e, what, signal), ...(signal ? { signal } : {}) });
    for (const e of entries) yield e;
  }

  private async fetchListing(url: URL, what: string, signal?: AbortSignal): Promise<ObjectInfo[]> {
    const { res } = await this.send('GET', url, { accept: 'application/json' }, signal);
    if (res.statusCode === 404) {
      await res.body.dump();
      return [];
    }
    // a server that failed, or asks who we are, says nothing of whether it lists folders
    if (res.statusCode === 401 || res.statusCode === 408 || res.statusCode === 429 || res.statusCode >= 500) {
      await res.body.dump();
      throw this.statusError(res.statusCode, what)!;
    }
    const type = String(res.headers['content-type'] ?? '');
    if (res.statusCode !== 200 || !type.includes('json')) {
      await res.body.dump();
      throw new ListingUnavailableError(
        `${what}: the server offers no JSON folder listing (HTTP ${res.statusCode}, ${type || 'no content type'}); this command needs one: serve the repository with nginx's "autoindex on; autoindex_format json;" (docs/mirror.md), or run it against the origin`,
      );
    }
    const body = await readCapped(res.body, MAX_LISTING_BYTES, this.idleMs, what);
    return parseListing(body, what);
  }

  /** One download attempt from `offset` (a Range request when above 0); fails (retryably) when the body ends short. */
  private attempt(key: string): SinkAttempt {
    const what = `${this.location}: ${key}`;
    return async (offset, sink, signal) => {
      try {
        const { res } = await this.send('GET', this.urlOf(key), offset > 0 ? { range: `bytes=${offset}-` } : {}, signal);
        const answer = await this.checkDownload(res, offset, what);
        await deliver(res.body, answer, sink, this.idleMs, what);
        // a server may answer a range with less than the rest (a cache's part size): a cut, resumed after it
        if (answer.partial) {
          throw new TarportError('CONNECTION', `${what}: the server sent bytes ${offset}-${answer.partial.end} of ${answer.partial.total}; the rest is asked for again`, { retryable: true });
        }
      } catch (e) {
        throw this.classify(e, what, signal);
      }
    };
  }

  /** Checks a download's status: what of the body to deliver. */
  private async checkDownload(res: Dispatcher.ResponseData, offset: number, what: string): Promise<Answer> {
    if (res.statusCode === 206) return this.checkPartial(res, offset, what);
    if (res.statusCode === 200) return { skip: offset }; // a server that ignored Range sends from byte 0
    if (res.statusCode === 416 && offset > 0) {
      await res.body.dump();
      throw new TarportError('IO', `${what}: the server holds less than the ${offset} bytes read before (HTTP 416): it changed under us`, { retryable: false });
    }
    await res.body.dump();
    throw this.statusError(res.statusCode, what) ?? new TarportError('NOT_FOUND', `${what}: not found`);
  }

  /**
   * A 206's Content-Range, `bytes a-b/c`: it must start at `offset` (a Range request was sent only
   * above 0) and may end before the file does, a cut resumed after b; with c unknown (`*`) the body's
   * length decides. A 206 nobody asked for is taken only when it holds the whole file.
   */
  private async checkPartial(res: Dispatcher.ResponseData, offset: number, what: string): Promise<Answer> {
    const range = String(res.headers['content-range'] ?? '').trim();
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(range);
    const start = Number(m?.[1]);
    const end = Number(m?.[2]);
    const total = m?.[3] === '*' ? undefined : Number(m?.[3]);
    const whole = total !== undefined && end === total - 1;
    const sane = m !== null && start === offset && end >= start && (total === undefined || end < total);
    if (!sane || (offset === 0 && !whole)) {
      await res.body.dump();
      const asked = offset > 0 ? `asked for bytes from ${offset}` : 'asked for the whole file (no Range)';
      throw new TarportError('IO', `${what}: ${asked}, the server sent HTTP 206 with ${range ? `Content-Range: ${range}` : 'no Content-Range'}`, { retryable: false });
    }
    return { skip: 0, length: end - start + 1, ...(total !== undefined && !whole ? { partial: { end, total } } : {}) };
  }

  async read(key: string, opts: ReadOptions = {}): Promise<Readable> {
    // a missing object fails here, not in the middle of a pipeline
    if (!(await this.stat(key, opts.signal))) throw new TarportError('NOT_FOUND', `${this.location}: ${key}: not found`);
    const what = `${this.location}: ${key}`;
    return sinkStream((sink, signal) => resumableInto(this.attempt(key), sink, this.resumeOptions(opts.offset ?? 0, what, signal)), what, opts.signal);
  }

  async readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    const what = `${this.location}: ${key}`;
    return resumableInto(this.attempt(key), sink, this.resumeOptions(opts.offset ?? 0, what, opts.signal));
  }

  private resumeOptions(offset: number, what: string, signal?: AbortSignal) {
    return { offset, retries: this.retries, what, retryable: (e: unknown) => this.classify(e, what, signal).retryable, ...(signal ? { signal } : {}), ...(this.opts.onResume ? { onResume: this.opts.onResume } : {}) };
  }

  private readOnly(op: string): never {
    throw new TarportError(
      'USAGE',
      `${this.location} is a read-only location (${op}): a web mirror serves what an origin publishes; push, watch, gc, repair and sync write to the origin (a directory, SFTP, FTP(S) or S3) instead`,
      { retryable: false },
    );
  }

  async write(key: string, _source: Source): Promise<{ size: number }> {
    return this.readOnly(`write ${key}`);
  }

  async rename(from: string): Promise<void> {
    this.readOnly(`rename ${from}`);
  }

  async remove(key: string): Promise<void> {
    this.readOnly(`remove ${key}`);
  }

  /**
   * Cuts every connection, a request still in flight too: its caller gave it up, and the pool's own
   * close() would wait for it to end, which a server that trickles bytes puts off without bound.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // the command's signal destroyed every connection already (a destroyed pool refuses another)
    if (this.opts.signal?.aborted) return;
    await this.dispatcher.destroy();
  }
}

function makeDispatcher(caFile: string | undefined, idleMs: number, proxy: HttpProxies | undefined): Dispatcher {
  let ca: string[] | undefined;
  if (caFile) {
    try {
      ca = [...rootCertificates, readFileSync(caFile, 'utf8')];
    } catch (e) {
      throw new TarportError('CONFIG', `--ca ${caFile}: ${messageOf(e)}`);
    }
  }
  const tls = ca ? { ca } : {};
  const timeouts = { headersTimeout: idleMs, bodyTimeout: idleMs, connectTimeout: idleMs };
  // the CA applies through a proxy's tunnel too; NO_PROXY hosts are reached directly. Each setting
  // is passed, '' where unset: undici reads the environment for one left out, and only cli/ does
  return proxy?.httpsProxy || proxy?.httpProxy
    ? new EnvHttpProxyAgent({ ...timeouts, connect: tls, requestTls: tls, clientFactory: tunnelPool, httpsProxy: proxy.httpsProxy ?? '', httpProxy: proxy.httpProxy ?? '', noProxy: proxy.noProxy ?? '' })
    : new Agent({ ...timeouts, connect: tls });
}

/**
 * The pool a proxy agent asks its proxy for tunnels (CONNECT) through. A refusal (407, 403, 502…)
 * becomes a typed ProxyRefusal here: undici would report it as an abort, its status in the message.
 */
function tunnelPool(proxy: URL, opts: object): Dispatcher {
  const pool = new Pool(proxy, opts);
  const connect = pool.connect.bind(pool) as (o: Dispatcher.ConnectOptions) => Promise<Dispatcher.ConnectData>;
  return Object.assign(pool, {
    connect: async (o: Dispatcher.ConnectOptions): Promise<Dispatcher.ConnectData> => {
      const tunnel = await connect(o);
      if (tunnel.statusCode === 200) return tunnel;
      tunnel.socket.destroy();
      throw new ProxyRefusal(tunnel.statusCode, `${proxy.protocol}//${proxy.host}`);
    },
  });
}

/** A proxy's refusal of a tunnel: retried when the proxy failed (5xx), with advice when it is ours to fix. */
function proxyError(e: ProxyRefusal, what: string): TarportError {
  const said = `${what}: the proxy ${e.proxy} refused the tunnel (HTTP ${e.status})`;
  if (e.status === 407) {
    return new TarportError('CONNECTION', `${said}: it wants credentials; give them in the proxy's URL (HTTPS_PROXY=http://USER:PASSWORD@${e.proxy.replace(/^[a-z]+:\/\//, '')})`, { cause: e, retryable: false });
  }
  if (e.status === 403) return new TarportError('CONNECTION', `${said}: it does not allow this host; ask its operator, or list the host in NO_PROXY`, { cause: e, retryable: false });
  return new TarportError('CONNECTION', said, { cause: e, retryable: e.status >= 500 });
}

/** What of a download's body to deliver, as checkDownload found it. */
interface Answer {
  /** Bytes at the body's start to drop (a server that ignored Range sends from byte 0). */
  readonly skip: number;
  /** The bytes the body holds after `skip`, when its Content-Range says. */
  readonly length?: number;
  /** A 206 that ends before the file does: its last byte and the file's size. */
  readonly partial?: { readonly end: number; readonly total: number };
}

/**
 * Hands the body to the sink from byte `skip` on; fails when it ends before Content-Length or the
 * length its range names, or flows slower than the floor (paced).
 */
async function deliver(body: Dispatcher.ResponseData['body'], answer: Answer, sink: ByteSink, idleMs: number, what: string): Promise<void> {
  let toSkip = answer.skip;
  let left = answer.length ?? Infinity;
  for await (const c of paced(body, idleMs, what)) {
    let chunk = c;
    if (toSkip > 0) {
      const n = Math.min(toSkip, chunk.length);
      toSkip -= n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) continue;
    }
    if (chunk.length > left) throw new TarportError('IO', `${what}: the server sent more bytes than its Content-Range names`, { retryable: false });
    left -= chunk.length;
    const r = sink(chunk);
    if (r) await r;
  }
  if (toSkip > 0) throw new TarportError('CONNECTION', `${what}: the body ended before the offset to resume from`, { retryable: true });
  if (answer.length !== undefined && left > 0) throw new TarportError('CONNECTION', `${what}: the body ended ${left} bytes before the end of its Content-Range`, { retryable: true });
}

/**
 * The body's chunks, failing it as stalled when fewer than MIN_BYTES_PER_SECOND arrive over a
 * window of `windowMs` (the idle timeout). Only time spent waiting for the network counts: while
 * the caller works on a chunk (a reader that pauses, a disk), the clock stops.
 */
async function* paced(body: Dispatcher.ResponseData['body'], windowMs: number, what: string): AsyncGenerator<Buffer> {
  const floor = Math.ceil((MIN_BYTES_PER_SECOND * windowMs) / 1000);
  const stall = () => body.destroy(new TarportError('CONNECTION', `${what}: fewer than ${floor} bytes in ${windowMs / 1000} s (below ${MIN_BYTES_PER_SECOND} B/s): the transfer stalled`, { retryable: true }));
  const clock = new SpeedFloor(windowMs, floor, stall);
  try {
    clock.wait();
    for await (const c of body as AsyncIterable<Buffer>) {
      clock.got(c.length);
      yield c;
      clock.wait();
    }
  } finally {
    clock.stop();
  }
}

/** Counts the bytes of windows of network time; calls `onStall` at the end of one that held fewer than `floor`. */
class SpeedFloor {
  private bytes = 0;
  /** Network time left in the window under way. */
  private left: number;
  private since = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly windowMs: number,
    private readonly floor: number,
    private readonly onStall: () => void,
  ) {
    this.left = windowMs;
  }

  /** The transfer waits for the network: the clock runs. */
  wait(): void {
    this.since = performance.now();
    this.timer = setTimeout(() => this.windowEnds(), Math.max(0, this.left));
  }

  /** `n` bytes arrived: the clock stops until the next wait. */
  got(n: number): void {
    this.stop();
    this.left -= performance.now() - this.since;
    this.bytes += n;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private windowEnds(): void {
    this.timer = undefined;
    if (this.bytes < this.floor) return this.onStall();
    this.bytes = 0;
    this.left = this.windowMs;
    this.wait();
  }
}

async function readCapped(body: Dispatcher.ResponseData['body'], limit: number, idleMs: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of paced(body, idleMs, what)) {
    n += c.length;
    if (n > limit) {
      body.destroy();
      throw new TarportError('INTEGRITY', `${what}: larger than the ${limit} bytes a listing may have`, { retryable: false });
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** nginx's JSON autoindex: [{ name, type: 'file' | 'directory' | …, mtime, size? }]. */
function parseListing(body: Buffer, what: string): ObjectInfo[] {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new TarportError('INTEGRITY', `${what}: not valid JSON (${messageOf(e)})`, { retryable: false });
  }
  if (!Array.isArray(raw)) throw new TarportError('INTEGRITY', `${what}: a listing is a JSON array`, { retryable: false });
  const out: ObjectInfo[] = [];
  for (const e of raw as { name?: unknown; type?: unknown; size?: unknown; mtime?: unknown }[]) {
    if (typeof e?.name !== 'string' || e.name === '' || e.name === '.' || e.name === '..' || /[/\\\0]/.test(e.name)) {
      throw new TarportError('INTEGRITY', `${what}: an entry has no valid name (${JSON.stringify(e?.name)?.slice(0, 80)})`, { retryable: false });
    }
    if (e.type !== 'file' && e.type !== 'directory') continue; // links and others are not repository files
    const mtime = typeof e.mtime === 'string' ? new Date(e.mtime) : undefined;
    out.push({ name: e.name, isDir: e.type === 'directory', size: typeof e.size === 'number' ? e.size : 0, ...(mtime && !isNaN(mtime.getTime()) ? { mtime } : {}) });
  }
  return out;
}
