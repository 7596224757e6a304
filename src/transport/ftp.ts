import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { Client, FTPError, type FileInfo } from 'basic-ftp';
import { TarportError, messageOf } from '../errors.js';
import { keySegments, parentOf } from './keys.js';
import { formatLocation, type Location } from './location.js';
import { listing, retrieve, store } from './ftpdata.js';
import { resumableInto, resumableWrite, sinkStream } from './resume.js';
import { TLS_TRUST_CODES } from './tls.js';
import { closedByOwner, withRetries } from './retry.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from './types.js';

/** A login's commands (greeting, AUTH TLS and its handshake, USER, PASS, PBSZ, PROT, TYPE...) each get the timeout; the whole login gets this many. */
const LOGIN_BOUND_COMMANDS = 3;

export interface FtpOptions {
  readonly password?: string;
  /** PEM file of a private CA for FTPS. */
  readonly ca?: string;
  /**
   * Connections at once. Low by default: many servers allow 3 per user (vsftpd's max_per_ip,
   * pure-ftpd -c), and a consumer polling the same account must still get in.
   */
  readonly maxConnections?: number;
  /** Reconnects per transfer before giving up. */
  readonly retries?: number;
  readonly timeoutMs?: number;
  /** Aborting closes every connection: any wait on the server ends at once (SIGTERM, SIGINT). */
  readonly signal?: AbortSignal;
  /** Told the offset each time a transfer resumes (tests, logs). */
  readonly onResume?: (at: number) => void;
}

/**
 * The most a folder listing may hold. A repository's largest folder is blobs/sha256, one line of
 * ~100 bytes per layer: 250,000 layers fit; an endless listing stops here (exit 3).
 */
const LISTING_LIMITS = { maxBytes: 32 << 20, maxEntries: 250_000 } as const;

type FtpLocation = Exclude<Location, { kind: 'file' }> & { kind: 'ftp' | 'ftps' };

/** FTP and FTPS (explicit TLS, certificate verified) on basic-ftp, with a small connection pool. */
export class FtpTransport implements Transport {
  readonly capabilities: Transport['capabilities'];
  readonly location: string;
  private readonly idle: Client[] = [];
  /** Every connection open now, idle or busy. */
  private readonly all = new Set<Client>();
  private busy = 0;
  private readonly waiters: (() => void)[] = [];
  /** Closed by its owner: nothing more runs on it, and what was still running was given up. */
  private closed = false;
  /** Aborted by close() or the command's signal: a login under way is given up at once (connect). */
  private readonly stopping = new AbortController();
  private readonly madeDirs = new Set<string>();
  private readonly root: string;
  private readonly retries: number;
  private readonly ca: Buffer | undefined;
  private readonly timeoutMs: number;
  /** What this server taught us about passive mode (EPSV refused). */
  private readonly passive: { epsvRefused?: boolean } = {};

  constructor(
    private readonly loc: FtpLocation,
    private readonly opts: FtpOptions = {},
  ) {
    this.location = formatLocation(loc);
    // RNFR/RNTO replaces the target in one step on vsftpd and proftpd, but pure-ftpd refuses to
    // rename over a file and rename() then removes the target first: not guaranteed.
    this.capabilities = { atomicRename: false, maxConnections: opts.maxConnections ?? 2, local: false };
    this.root = loc.path.replace(/\/+$/, '') || '';
    this.retries = opts.retries ?? 5;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    opts.signal?.addEventListener('abort', () => {
      this.stopping.abort();
      for (const c of this.all) c.close();
    }, { once: true });
    if (opts.ca) {
      try {
        this.ca = readFileSync(opts.ca);
      } catch (e) {
        throw new TarportError('CONFIG', `--ca ${opts.ca}: ${messageOf(e)}`);
      }
    }
  }

  private path(key: string): string {
    return `${this.root}/${keySegments(key).join('/')}`;
  }

  // ---- connections -----------------------------------------------------------------------------

  private closedError(): TarportError {
    return closedByOwner(this.location);
  }

  private async connect(): Promise<Client> {
    if (this.opts.signal?.aborted) throw new TarportError('ABORTED', `${this.location}: stopped`, { retryable: false });
    if (this.closed) throw this.closedError();
    const c = new Client(this.timeoutMs);
    this.all.add(c);
    c.ftp.socket.once('close', () => this.all.delete(c));
    // basic-ftp bounds each command of the login, but not the TLS handshake after AUTH TLS: a server
    // (or a link) that goes silent there would hold the connection, and its pool slot, for ever.
    // Closing the client does not end that handshake (basic-ftp takes its listeners off the socket
    // under it), so the login is raced against its bound, and abandoned when the bound comes first.
    // A close() or SIGTERM in the meantime ends the wait at once.
    const bound = LOGIN_BOUND_COMMANDS * this.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let stopped = () => undefined as void;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TarportError('CONNECTION', `connect on ${this.location}: the login did not finish within ${Math.round(bound / 1000)} s (the server went silent during it)`)), bound);
      stopped = () => reject(this.closed ? this.closedError() : new TarportError('ABORTED', `${this.location}: stopped`, { retryable: false }));
      this.stopping.signal.addEventListener('abort', stopped, { once: true });
    });
    try {
      const login = c.access({
        host: this.loc.host,
        port: this.loc.port,
        user: this.loc.user,
        password: this.opts.password ?? (this.loc.user === 'anonymous' ? 'anonymous@' : ''),
        secure: this.loc.kind === 'ftps',
        // Certificates are always verified; a private CA is added with --ca, never switched off.
        secureOptions: this.loc.kind === 'ftps' ? { ...(this.ca ? { ca: this.ca } : {}), rejectUnauthorized: true, ...(isIP(this.loc.host) ? {} : { servername: this.loc.host }) } : undefined,
      });
      login.catch(() => undefined); // abandoned when late: its end is of no interest then
      await Promise.race([login, late]);
    } catch (e) {
      c.close();
      this.all.delete(c);
      throw this.classify(e, 'connect');
    } finally {
      clearTimeout(timer);
      this.stopping.signal.removeEventListener('abort', stopped);
    }
    return c;
  }

  /**
   * An idle pooled connection that is still open. One the server ended while it idled (an idle
   * timeout, a restart) is dropped here, not used: it would cost the request a retry, or fail it
   * where none is left.
   */
  private takeIdle(): Client | undefined {
    for (let c = this.idle.pop(); c; c = this.idle.pop()) {
      if (!c.closed) return c;
      c.close();
      this.all.delete(c);
    }
    return undefined;
  }

  /** Runs `fn` on a pooled connection; a connection that broke is dropped, not returned. */
  private async withClient<T>(fn: (c: Client) => Promise<T>): Promise<T> {
    while (this.busy >= this.capabilities.maxConnections && !this.closed) await new Promise<void>((r) => this.waiters.push(r));
    if (this.closed) throw this.closedError();
    if (this.opts.signal?.aborted) {
      this.waiters.shift()?.();
      throw new TarportError('ABORTED', `${this.location}: stopped`, { retryable: false });
    }
    this.busy++;
    let c: Client | undefined;
    try {
      c = this.takeIdle() ?? (await this.connect());
      const r = await fn(c);
      if (this.closed) c.close();
      else if (!c.closed) this.idle.push(c);
      return r;
    } catch (e) {
      if (c && !c.closed && !this.closed && e instanceof FTPError) this.idle.push(c);
      else if (c) {
        c.close();
        this.all.delete(c);
      }
      throw this.closed ? this.closedError() : e;
    } finally {
      this.busy--;
      this.waiters.shift()?.();
    }
  }

  /** Maps a basic-ftp or socket error to what the caller does next. */
  private classify(e: unknown, op: string): TarportError {
    if (e instanceof TarportError) return e;
    // a request cut by close(): not a fault of the server's, and not to be tried again
    if (this.closed) return this.closedError();
    const where = `${op} on ${this.location}`;
    if (e instanceof FTPError) {
      const code = e.code;
      if (code === 530) return new TarportError('IO', `${where}: login refused (${e.message}); check the user and TARPORT_PASSWORD or --password-file`, { cause: e, retryable: false });
      if (code === 552 || code === 452) return new TarportError('IO', `${where}: no space left on the server (${e.message}); free space, then run again`, { cause: e, retryable: false });
      if (code === 550 || code === 553) return new TarportError('IO', `${where}: refused (${e.message}); check that the path exists and the user may write there`, { cause: e, retryable: false });
      if (code >= 500) return new TarportError('IO', `${where}: ${e.message}`, { cause: e, retryable: false });
      return new TarportError('CONNECTION', `${where}: ${e.message}`, { cause: e });
    }
    const sys = (e as NodeJS.ErrnoException | undefined)?.code ?? '';
    const msg = messageOf(e);
    if (TLS_TRUST_CODES.has(sys)) {
      return new TarportError('UNTRUSTED', `${where}: the server's TLS certificate is not trusted (${msg}); give its CA with --ca FILE`, { cause: e, retryable: false });
    }
    if (sys === 'ERR_SSL_WRONG_VERSION_NUMBER') {
      // vsftpd, for one, reports a fatal error of its own as plain text ("500 OOPS: ...") inside TLS
      return new TarportError('CONNECTION', `${where}: the server broke off TLS and sent plain text, which is how some servers (vsftpd: "500 OOPS") report their own failure; see the server's log (${msg.trim()})`, { cause: e });
    }
    if (sys === 'ECONNREFUSED' || sys === 'EHOSTUNREACH' || sys === 'ENOTFOUND') {
      return new TarportError('CONNECTION', `${where}: cannot reach the server (${sys}); is it up, and are host and port right?`, { cause: e });
    }
    return new TarportError('CONNECTION', `${where}: ${msg}`, { cause: e });
  }

  private retry<T>(op: string, fn: () => Promise<T>): Promise<T> {
    return withRetries(fn, { retries: this.retries, classify: (e) => this.classify(e, op) });
  }

  // ---- operations ------------------------------------------------------------------------------

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const p = this.path(key);
    return this.retry(`stat ${key}`, () =>
      this.withClient(async (c) => {
        try {
          const size = await c.size(p);
          // MDTM: a second small command on the same control connection, no data connection
          const mtime = await c.lastMod(p).catch(() => undefined);
          return { name: key.slice(key.lastIndexOf('/') + 1), isDir: false, size, ...(mtime ? { mtime } : {}) };
        } catch (e) {
          // 550: no such file. Any other refusal (502: no SIZE command, 530: not logged in) is
          // no answer about the file, and must not read as "missing" (no catalog, no object)
          if (e instanceof FTPError && e.code === 550) return undefined;
          throw e;
        }
      }),
    );
  }

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    const p = folder === '' ? this.root || '/' : this.path(folder);
    const items: FileInfo[] = await this.retry(`list ${folder || '/'}`, () =>
      this.withClient(async (c) => {
        try {
          return await this.listOn(c, p, `list ${folder || '/'} on ${this.location}`);
        } catch (e) {
          if (e instanceof FTPError && (e.code === 550 || e.code === 450)) return [];
          throw e;
        }
      }),
    );
    for (const f of items) {
      if (f.name === '.' || f.name === '..') continue;
      yield { name: f.name, isDir: f.isDirectory, size: f.size, ...(f.modifiedAt ? { mtime: f.modifiedAt } : {}) };
    }
  }

  /**
   * LIST (or MLSD, where the server offers it) on a data connection of our own, capped, parsed by
   * basic-ftp. Like basic-ftp's own list(), each command the server knows is tried in turn and the
   * first that works is kept for this connection.
   */
  private async listOn(c: Client, path: string, what: string): Promise<FileInfo[]> {
    let refused: unknown;
    for (const candidate of c.availableListCommands) {
      try {
        const raw = await listing(c.ftp, `${candidate} ${path}`, what, LISTING_LIMITS, { timeoutMs: this.timeoutMs, passive: this.passive, signal: this.opts.signal ?? new AbortController().signal });
        c.availableListCommands = [candidate];
        return c.parseList(raw.toString(c.ftp.encoding));
      } catch (e) {
        if (!(e instanceof FTPError)) throw e;
        refused = e;
      }
    }
    throw refused;
  }

  /**
   * Downloads on a data connection of our own (ftpdata.ts), resuming with REST where a cut
   * connection broke; a download ends only when the server confirmed the transfer (226).
   */
  private download(key: string, sink: ByteSink, offset: number, lend: boolean, signal?: AbortSignal): Promise<number> {
    const p = this.path(key);
    return resumableInto(
      (from, deliver, sig) =>
        this.withClient(async (c) => {
          const stop = () => c.close();
          sig.addEventListener('abort', stop, { once: true });
          try {
            await retrieve(c.ftp, p, from, deliver, { lend, signal: sig, timeoutMs: this.timeoutMs, passive: this.passive });
          } catch (e) {
            if (e instanceof FTPError && e.code === 550) throw new TarportError('NOT_FOUND', `read ${key} from ${this.location}: not found (${e.message})`, { cause: e, retryable: false });
            throw e;
          } finally {
            sig.removeEventListener('abort', stop);
          }
        }),
      sink,
      {
        offset,
        retries: this.retries,
        what: `read ${key} from ${this.location}`,
        ...(signal ? { signal } : {}),
        retryable: (e) => this.classify(e, 'read').retryable,
        ...(this.opts.onResume ? { onResume: this.opts.onResume } : {}),
      },
    );
  }

  async read(key: string, opts: ReadOptions = {}): Promise<Readable> {
    // the stream keeps its chunks: the socket's own fresh buffers go in, not lent ones
    return sinkStream((sink, signal) => this.download(key, sink, opts.offset ?? 0, false, signal), `read ${key} from ${this.location}`, opts.signal);
  }

  readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    return this.download(key, sink, opts.offset ?? 0, true, opts.signal);
  }

  private async ensureParent(key: string): Promise<void> {
    const parent = parentOf(key);
    const segs = [...this.root.split('/').filter(Boolean), ...(parent ? keySegments(parent) : [])];
    let cur = '';
    for (const s of segs) {
      cur += `/${s}`;
      if (this.madeDirs.has(cur)) continue;
      await this.withClient(async (c) => {
        // MKD of an existing folder answers 550 on every server: that is fine
        await c.send(`MKD ${cur}`).catch((e: unknown) => {
          if (!(e instanceof FTPError)) throw e;
        });
      });
      this.madeDirs.add(cur);
    }
  }

  /**
   * Uploads on a data connection of our own; when the connection breaks, the upload resumes where
   * the server's copy ends (SIZE, then APPE with the rest of the source), so only the missing bytes
   * are sent again.
   */
  async write(key: string, source: Source, opts: WriteOptions = {}): Promise<{ size: number }> {
    const p = this.path(key);
    const what = `upload ${key} to ${this.location}`;
    await this.retry(`create folder for ${key}`, () => this.ensureParent(key));
    return resumableWrite({
      retries: this.retries,
      what,
      ...(opts.signal ? { signal: opts.signal } : {}),
      retryable: (e) => this.classify(e, 'upload').retryable,
      upload: async (offset, sourceEnded) => {
        try {
          const signal = opts.signal ?? new AbortController().signal;
          const onSourceEnd = (sent: number) => sourceEnded(offset + sent);
          return await this.withClient((c) => store(c.ftp, offset > 0 ? 'APPE' : 'STOR', p, source, offset, what, { signal, timeoutMs: this.timeoutMs, passive: this.passive, onSourceEnd }));
        } catch (e) {
          throw this.classify(e, `upload ${key}`);
        }
      },
      remoteSize: async () => (await this.stat(key))?.size,
      cleanup: () => this.remove(key),
      ...(this.opts.onResume ? { onResume: this.opts.onResume } : {}),
    });
  }

  async rename(from: string, to: string): Promise<void> {
    const [a, b] = [this.path(from), this.path(to)];
    await this.retry(`create folder for ${to}`, () => this.ensureParent(to));
    await this.retry(`rename ${from} to ${to}`, () =>
      this.withClient(async (c) => {
        try {
          await c.rename(a, b);
        } catch (e) {
          // Some servers (pure-ftpd) refuse to rename over an existing file: remove it, then rename.
          if (!(e instanceof FTPError) || e.code < 500) throw e;
          await c.remove(b, true);
          await c.rename(a, b);
        }
      }),
    );
  }

  async remove(key: string): Promise<void> {
    const p = this.path(key);
    await this.retry(`remove ${key}`, () => this.withClient((c) => c.remove(p, true).then(() => undefined)));
  }

  /**
   * Closes every connection, the busy ones too: a request still in flight when the owner closes the
   * transport was given up (a bounded acknowledgement that ran out of time, say), and a connection
   * left open to a server that never answers would keep the process alive past its own bounds.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.stopping.abort();
    this.idle.length = 0;
    for (const c of this.all) c.close();
    this.all.clear();
    for (const w of this.waiters.splice(0)) w();
  }
}

