import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import { TarportError, messageOf } from '../errors.js';
import { keySegments } from './keys.js';
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
      const res = await request(url, { method, headers: { ...headers, ...auth }, dispatcher: this.dispatcher, signal: signal ?? null, headersTimeout: this.idleMs, bodyTimeout: this.idleMs });
      const location = res.headers.location;
      if (res.statusCode < 300 || res.statusCode >= 400 || res.statusCode === 304 || typeof location !== 'string') return { res, url };
      await res.body.dump();
      const next = new URL(location, url);
      if (hop >= MAX_REDIRECTS) throw new TarportError('IO', `${this.location}: more than ${MAX_REDIRECTS} redirects from ${url.pathname}`, { retryable: false });
      if (next.protocol !== 'https:' && (this.base.protocol === 'https:' || next.protocol !== 'http:')) {
        throw new TarportError('UNTRUSTED', `${this.location}: ${url.pathname} redirects to ${next.protocol}//${next.host}, which would weaken the connection; refused`, { retryable: false });
      }
      url = next;
    }
  }

  /** Maps a status that is not a success to a typed error (undefined for 404 and 410). */
  private statusError(status: number, what: string): TarportError | undefined {
    if (status === 404 || status === 410) return undefined;
    if (status === 401) return new TarportError('IO', `${what}: authentication failed (HTTP 401); check the user in the URL and TARPORT_PASSWORD or --password-file`, { retryable: false });
    if (status === 403) return new TarportError('IO', `${what}: permission denied (HTTP 403)`, { retryable: false });
    if (status === 408 || status === 429 || status >= 500) return new TarportError('CONNECTION', `${what}: the server answered HTTP ${status}`, { retryable: true });
    return new TarportError('IO', `${what}: the server answered HTTP ${status}`, { retryable: false });
  }

  private classify(e: unknown, what: string): TarportError {
    if (e instanceof TarportError) return e;
    if (this.closed) return closedByOwner(what, e);
    const code = errorCode(e);
    if (code === 'ABORT_ERR' || (e as Error | undefined)?.name === 'AbortError') return new TarportError('ABORTED', `${what}: aborted`, { cause: e });
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
      { retries: this.retries, classify: (e) => this.classify(e, what), ...(signal ? { signal } : {}) },
    );
  }

  async *list(folder: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    const url = folder === '' ? this.base : new URL(`${keySegments(folder).map(encodeURIComponent).join('/')}/`, this.base);
    const what = `${this.location}: listing of ${folder || '/'}`;
    const entries = await withRetries(() => this.fetchListing(url, what, signal), { retries: this.retries, classify: (e) => this.classify(e, what), ...(signal ? { signal } : {}) });
    for (const e of entries) yield e;
  }

  private async fetchListing(url: URL, what: string, signal?: AbortSignal): Promise<ObjectInfo[]> {
    const { res } = await this.send('GET', url, { accept: 'application/json' }, signal);
    if (res.statusCode === 404) {
      await res.body.dump();
      return [];
    }
    const type = String(res.headers['content-type'] ?? '');
    if (res.statusCode !== 200 || !type.includes('json')) {
      await res.body.dump();
      throw new TarportError(
        'IO',
        `${what}: the server offers no JSON folder listing (HTTP ${res.statusCode}, ${type || 'no content type'}); this command needs one: serve the repository with nginx's "autoindex on; autoindex_format json;" (docs/mirror.md), or run it against the origin`,
        { retryable: false },
      );
    }
    const body = await readCapped(res.body, MAX_LISTING_BYTES, what);
    return parseListing(body, what);
  }

  /** One download attempt from `offset`; fails (retryably) when the body ends short. */
  private attempt(key: string): SinkAttempt {
    const what = `${this.location}: ${key}`;
    return async (offset, sink, signal) => {
      try {
        const { res } = await this.send('GET', this.urlOf(key), offset > 0 ? { range: `bytes=${offset}-` } : {}, signal);
        const skip = await this.checkDownload(res, offset, what);
        await deliver(res.body, skip, sink, what);
      } catch (e) {
        throw this.classify(e, what);
      }
    };
  }

  /** Checks a download's status; returns how many bytes to skip (a server that ignored Range). */
  private async checkDownload(res: Dispatcher.ResponseData, offset: number, what: string): Promise<number> {
    if (res.statusCode === 206) {
      const m = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
      if (!m || Number(m[1]) !== offset) {
        await res.body.dump();
        throw new TarportError('IO', `${what}: asked for bytes from ${offset}, the server sent ${String(res.headers['content-range'])}`, { retryable: false });
      }
      return 0;
    }
    if (res.statusCode === 200) return offset;
    if (res.statusCode === 416 && offset > 0) {
      await res.body.dump();
      throw new TarportError('IO', `${what}: the server holds less than the ${offset} bytes read before (HTTP 416): it changed under us`, { retryable: false });
    }
    await res.body.dump();
    throw this.statusError(res.statusCode, what) ?? new TarportError('NOT_FOUND', `${what}: not found`);
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
    return { offset, retries: this.retries, what, retryable: (e: unknown) => this.classify(e, what).retryable, ...(signal ? { signal } : {}), ...(this.opts.onResume ? { onResume: this.opts.onResume } : {}) };
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
  // the CA applies through a proxy's tunnel too; NO_PROXY hosts are reached directly
  return proxy?.httpsProxy || proxy?.httpProxy
    ? new EnvHttpProxyAgent({ ...timeouts, connect: tls, requestTls: tls, ...(proxy.httpsProxy ? { httpsProxy: proxy.httpsProxy } : {}), ...(proxy.httpProxy ? { httpProxy: proxy.httpProxy } : {}), ...(proxy.noProxy ? { noProxy: proxy.noProxy } : {}) })
    : new Agent({ ...timeouts, connect: tls });
}

/** Hands the body to the sink from byte `skip` on; fails when it ends before Content-Length. */
async function deliver(body: Dispatcher.ResponseData['body'], skip: number, sink: ByteSink, what: string): Promise<void> {
  let toSkip = skip;
  for await (const c of body as AsyncIterable<Buffer>) {
    let chunk = c;
    if (toSkip > 0) {
      const n = Math.min(toSkip, chunk.length);
      toSkip -= n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) continue;
    }
    const r = sink(chunk);
    if (r) await r;
  }
  if (toSkip > 0) throw new TarportError('CONNECTION', `${what}: the body ended before the offset to resume from`, { retryable: true });
}

async function readCapped(body: Dispatcher.ResponseData['body'], limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body as AsyncIterable<Buffer>) {
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
