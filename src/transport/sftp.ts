import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Client, type SFTPWrapper } from 'ssh2';
import { TarportError, isTarportError, messageOf } from '../errors.js';
import { checkHostKey, knownHostsName } from './knownhosts.js';
import { MAX_FOLDER_ENTRIES, keySegments, parentOf } from './keys.js';
import { formatLocation, type Location } from './location.js';
import { resumableRead, resumableWrite } from './resume.js';
import { closedByOwner, withRetries } from './retry.js';
import { drainInto, readableFrom } from './source.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from './types.js';
import { linkSignals, withSignal } from '../signals.js';

export interface SftpOptions {
  readonly password?: string;
  /** Private key file (default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa, whichever exists). */
  readonly identity?: string;
  readonly passphrase?: string;
  /** known_hosts file (default ~/.ssh/known_hosts). The host key must be listed: no silent trust. */
  readonly knownHosts?: string;
  readonly retries?: number;
  /** Aborting drops the connection: every request in flight fails at once (SIGTERM, SIGINT). */
  readonly signal?: AbortSignal;
  /** A silent connection counts as stalled after this long (ssh2 has no timeout of its own). */
  readonly timeoutMs?: number;
  readonly onResume?: (at: number) => void;
}

type SftpLocation = Exclude<Location, { kind: 'file' | 's3' }>;

/** One SSH session; `fault` is why its connection ended, when it did with an error. */
interface Session {
  readonly client: Client;
  sftp: SFTPWrapper;
  fault?: unknown;
  /** The SFTP requests this session awaits (`slow`: those of SLOW_REQUESTS), and when the server last answered one. */
  readonly replies: { pending: number; slow: number; heard: number };
}

/**
 * A silent link (a dead NAT entry, a hung server) leaves ssh2 waiting forever: it has no idle
 * timeout. A session whose server sent nothing at all for `ms` is stalled, since a live one always
 * answers something in that time: data, write acknowledgements, or the keepalive's replies. Its
 * socket is destroyed, which fails every request in flight, and the transfer resumes on a new
 * session as after a cut. Silence is measured on the bytes received, not on replies counted, so a
 * busy server that answers a keepalive late behind a queue of writes is not taken for a dead one.
 */
function watchSilence(sock: Socket, ms: number, session: Session, client: Client): void {
  let heard = Date.now();
  sock.on('data', () => (heard = Date.now()));
  const { replies } = session;
  const timer = setInterval(() => {
    const now = Date.now();
    const silent = now - heard >= ms;
    // the SSH side alive (keepalive replies) while the server's SFTP process answers nothing: a
    // hung sftp-server, a stopped one, one stuck on a dead disk of its own
    const bound = replies.slow > 0 ? SLOW_REPLY_FACTOR * ms : ms;
    const deaf = replies.pending > 0 && now - replies.heard >= bound;
    if (!silent && !deaf) return;
    clearInterval(timer);
    session.fault ??= new TarportError('CONNECTION', silent ? `stalled: nothing came from the server for ${ms / 1000} s` : `stalled: the server's SFTP subsystem answered none of ${replies.pending} request(s) for ${bound / 1000} s, while its SSH connection lives`, { retryable: true });
    sock.destroy();
  }, Math.max(25, Math.floor(ms / 8)));
  timer.unref();
  client.once('close', () => clearInterval(timer));
  sock.once('close', () => clearInterval(timer));
}

/**
 * Requests a server may rightly take long over: a rename that copies (an SFTP gateway on object
 * storage), the close that completes an upload there, an fsync on a slow disk. While one is
 * unanswered (and a server answers in order, so everything sent after it waits too), silence is
 * allowed SLOW_REPLY_FACTOR times the idle timeout.
 */
const SLOW_REQUESTS = new Set(['close', 'rename', 'ext_openssh_rename', 'ext_openssh_fsync', 'ext_copy_data']);
const SLOW_REPLY_FACTOR = 10;

/** The SFTPWrapper methods that send a request and take its answer in a callback (ssh2 1.x). */
const REQUESTS = new Set(['open', 'close', 'read', 'write', 'fstat', 'fsetstat', 'futimes', 'fchown', 'fchmod', 'opendir', 'readdir', 'unlink', 'rename', 'mkdir', 'rmdir', 'stat', 'lstat', 'setstat', 'utimes', 'chown', 'chmod', 'readlink', 'symlink', 'realpath', 'ext_openssh_rename', 'ext_openssh_statvfs', 'ext_openssh_fstatvfs', 'ext_openssh_hardlink', 'ext_openssh_fsync', 'ext_openssh_lsetstat', 'ext_openssh_expandPath', 'ext_copy_data', 'ext_home_dir', 'ext_users_groups']);

/**
 * The channel, with every request it sends counted until its answer (or its failure) comes: what
 * watchSilence needs to tell a hung SFTP subsystem behind a live SSH connection. ssh2 keeps its own
 * table of requests in flight private, so the count is kept here, through the public methods.
 */
function countReplies(sftp: SFTPWrapper, replies: Session['replies']): SFTPWrapper {
  return new Proxy(sftp, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      const method = v as (...a: unknown[]) => unknown;
      if (typeof prop !== 'string' || !REQUESTS.has(prop)) return method.bind(target);
      return (...args: unknown[]) => {
        const cb = args[args.length - 1];
        if (typeof cb !== 'function') return method.apply(target, args);
        const slow = SLOW_REQUESTS.has(prop) ? 1 : 0;
        let answered = false;
        const answer = () => {
          if (answered) return;
          answered = true;
          replies.pending--;
          replies.slow -= slow;
          replies.heard = Date.now();
        };
        // the wait for an answer starts with the first request sent after a quiet spell
        if (replies.pending++ === 0) replies.heard = Date.now();
        replies.slow += slow;
        args[args.length - 1] = (...r: unknown[]) => {
          answer();
          return (cb as (...a: unknown[]) => unknown)(...r);
        };
        try {
          return method.apply(target, args);
        } catch (e) {
          answer(); // refused before it was sent: nothing to wait for
          throw e;
        }
      };
    },
  });
}

function isTimeout(e: unknown): boolean {
  return (e as { name?: string } | undefined)?.name === 'TimeoutError';
}

function stalled(what: string, ms: number): TarportError {
  return new TarportError('CONNECTION', `${what}: no answer for ${ms / 1000} s (the link stalled)`, { retryable: true });
}

const CHUNK = 64 << 10; // below every server's packet limit (OpenSSH: 255 KiB)
const DEPTH = 32; // requests in flight per transfer: 2 MiB, enough to fill a fast link
/**
 * Write requests in flight at the start of an upload: 512 KiB. OpenSSH's sshd (9.2, internal-sftp)
 * answers the first megabytes of a file slower the more of them are in flight (it opens its window
 * 64 KiB at a time; docs/producer.md has the figures).
 */
export const WRITE_DEPTH = 8;
/**
 * Write requests in flight once WRITE_RAMP bytes of the file were answered: 1.5 MiB, what a link
 * of 1 Gbit/s with 12 ms of round trip holds. 512 KiB would cap such a link at 40 MB/s, and a
 * satellite link of 600 ms at under 1 MB/s.
 */
export const WRITE_DEPTH_MAX = 24;
export const WRITE_RAMP = 8 << 20;

/** SFTP status codes (draft-ietf-secsh-filexfer; 14 and 15 from version 5 on). */
const SFTP_STATUS = { NO_SUCH_FILE: 2, PERMISSION_DENIED: 3, FAILURE: 4, BAD_MESSAGE: 5, NO_CONNECTION: 6, CONNECTION_LOST: 7, OP_UNSUPPORTED: 8, NO_SPACE: 14, QUOTA_EXCEEDED: 15 } as const;
const NO_SUCH_FILE = SFTP_STATUS.NO_SUCH_FILE;

interface FolderEntry {
  filename: string;
  attrs: { size: number; mode: number; mtime: number };
}

/**
 * A folder's entries, batch by batch through its handle, at most MAX_FOLDER_ENTRIES: ssh2's readdir of
 * a path gathers every batch a server sends until it says the end, and a server that never does would
 * take the agent's memory. A missing folder lists as empty.
 */
function readFolder(s: SFTPWrapper, p: string, what: string): Promise<FolderEntry[]> {
  return new Promise((resolve, reject) => {
    s.opendir(p, (err, handle) => {
      if (err) return sftpCode(err) === NO_SUCH_FILE ? resolve([]) : reject(err);
      const out: FolderEntry[] = [];
      const done = (e?: unknown) => s.close(handle, () => (e ? reject(e) : resolve(out)));
      const next = () =>
        s.readdir(handle, (e, list) => {
          if (e) return sftpCode(e) === SFTP_EOF ? done() : done(e);
          out.push(...(list as FolderEntry[]));
          if (out.length > MAX_FOLDER_ENTRIES) return done(new TarportError('INTEGRITY', `${what}: more than ${MAX_FOLDER_ENTRIES} entries (a listing without end?)`, { retryable: false }));
          next();
        });
      next();
    });
  });
}

/** SFTP's end-of-file status, which also ends a folder's listing. */
const SFTP_EOF = 1;

function sftpCode(e: unknown): number | undefined {
  return (e as { code?: number } | undefined)?.code;
}

/**
 * SFTP on ssh2 directly: one SSH session per transport, pipelined reads and writes (many requests
 * in flight, as OpenSSH's sftp does), Nagle off (ssh2 leaves it on: every request would stall
 * ~40 ms), and the server's host key checked against known_hosts before anything is sent.
 */
export class SftpTransport implements Transport {
  // posix-rename@openssh.com replaces in one step; a server without it gets unlink then rename
  // (see rename): not guaranteed.
  readonly capabilities = { atomicRename: false, maxConnections: 4, local: false } as const;
  readonly location: string;
  private session: Promise<Session> | undefined;
  private readonly root: string;
  private readonly retries: number;
  private readonly knownHostsFile: string;
  private readonly timeoutMs: number;
  /**
   * Folders this transport made or saw: a write or a rename into one costs no stat per path segment
   * (7 round trips per object on a typical path, twice per object, were most of a 40-layer push's
   * requests). Forgotten when the server says a path is missing: a folder removed behind our back.
   */
  private readonly folders = new Set<string>();

  constructor(
    private readonly loc: SftpLocation,
    private readonly opts: SftpOptions = {},
  ) {
    this.location = formatLocation(loc);
    this.root = loc.path.replace(/\/+$/, '');
    this.retries = opts.retries ?? 5;
    this.knownHostsFile = opts.knownHosts ?? join(homedir(), '.ssh', 'known_hosts');
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    opts.signal?.addEventListener('abort', () => this.dropAll(), { once: true });
  }

  private path(key: string): string {
    return `${this.root}/${keySegments(key).join('/')}`;
  }

  private privateKey(): Buffer | undefined {
    const candidates = this.opts.identity ? [this.opts.identity] : ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((n) => join(homedir(), '.ssh', n));
    for (const f of candidates) {
      if (!this.opts.identity && !existsSync(f)) continue;
      try {
        return readFileSync(f);
      } catch (e) {
        throw new TarportError('CONFIG', `--identity ${f}: ${messageOf(e)}`);
      }
    }
    return undefined;
  }

  /** Set by close(): nothing more is asked of the server, and what close() cut is not tried again. */
  private closed = false;
  /** Aborted by close(): a connect under way and the pauses between retries end at once. */
  private readonly closing = new AbortController();

  private closedError(op: string): TarportError {
    return closedByOwner(`${op} on ${this.location}`);
  }

  /** Why a session's requests will never be answered: its connection stalled or dropped. */
  private lost(session: Session, op: string): TarportError {
    if (this.closed) return this.closedError(op);
    const f = session.fault;
    const why = isTarportError(f) ? f.message : `the connection was lost${f ? ` (${messageOf(f)})` : ''}`;
    return new TarportError('CONNECTION', `${op} on ${this.location}: ${why}`, { cause: f, retryable: true });
  }

  private connectOnce(): Promise<Session> {
    // eslint-disable-next-line prefer-const
    let current: Promise<Session>;
    current = (async () => {
      const sock = netConnect({ host: this.loc.host, port: this.loc.port });
      this.sockets.add(sock);
      sock.once('close', () => this.sockets.delete(sock));
      sock.setNoDelay(true);
      try {
        await withSignal([AbortSignal.timeout(this.timeoutMs), this.closing.signal], (signal) => once(sock, 'connect', { signal }));
      } catch (e) {
        sock.destroy();
        throw this.classify(isTimeout(e) && !this.closed ? stalled(`connect to ${this.loc.host}:${this.loc.port}`, this.timeoutMs) : e, 'connect');
      }
      // cut by close() while it connected (connectEarly): no handshake on a destroyed socket
      if (sock.destroyed) throw new TarportError('CONNECTION', `connect to ${this.location}: closed before the SSH handshake`, { retryable: true });
      const client = new Client();
      let hostKeyFault: TarportError | undefined;
      const privateKey = this.privateKey();
      // 'ready', or a failure: an error, or a connection that closes before the handshake is done
      const ready = new Promise<void>((resolve, reject) => {
        client.once('ready', resolve);
        // on, not once: a socket cut during the handshake (close() after connectEarly) may make
        // ssh2 report more than one error, and an unheard one would end the process
        client.on('error', reject);
        client.once('close', () => reject(new Error('connection closed during the SSH handshake')));
      });
      client.connect({
        sock,
        username: this.loc.user,
        ...(privateKey ? { privateKey } : {}),
        ...(this.opts.passphrase ? { passphrase: this.opts.passphrase } : {}),
        ...(this.opts.password ? { password: this.opts.password } : {}),
        readyTimeout: this.timeoutMs,
        // ssh2 has no idle timeout (see watchSilence); its keepalive makes an idle session answer
        // something three times per timeout, and never ends a session itself
        keepaliveInterval: Math.max(1, Math.floor(this.timeoutMs / 3)),
        keepaliveCountMax: Number.MAX_SAFE_INTEGER,
        hostVerifier: (key: Buffer) => {
          try {
            const v = checkHostKey(this.knownHostsFile, this.loc.host, this.loc.port, key);
            if (v.ok) return true;
            const name = knownHostsName(this.loc.host, this.loc.port);
            hostKeyFault =
              v.reason === 'unknown'
                ? new TarportError('UNTRUSTED', `${this.location}: unknown host key ${v.offered} for ${name}; check the fingerprint with the server's admin, then add it to ${this.knownHostsFile} (ssh-keyscan -p ${this.loc.port} ${this.loc.host})`, { retryable: false })
                : new TarportError('UNTRUSTED', `${this.location}: the host key of ${name} changed: the server offers ${v.offered}, ${this.knownHostsFile} has ${v.known.join(', ')}; refusing (this may be an attack; if the key really changed, fix ${this.knownHostsFile})`, { retryable: false });
          } catch (e) {
            hostKeyFault = e instanceof TarportError ? e : new TarportError('CONFIG', messageOf(e));
          }
          return false;
        },
      });
      try {
        await ready;
      } catch (e) {
        client.end();
        throw hostKeyFault ?? this.classify(e, 'connect');
      }
      const session: Session = { client, sftp: undefined as unknown as SFTPWrapper, replies: { pending: 0, slow: 0, heard: Date.now() } };
      client.on('error', (e: unknown) => (session.fault ??= e));
      watchSilence(sock, this.timeoutMs, session, client);
      const drop = () => {
        if (this.session === current) this.session = undefined;
      };
      client.on('close', drop);
      client.on('error', drop);
      session.sftp = await this.openChannel(session, drop);
      return session;
    })();
    return current;
  }

  /**
   * The session's one SFTP channel. ssh2 drops its own 'error' listener as it hands the channel
   * over, while it may still be reading the server's packets: ours is attached in that same call. A
   * malformed packet fails the channel with an 'error' that, unheard, would end the agent; its
   * requests in flight fail with it (protocolFault names it), and the session, whose channel is
   * gone, ends.
   */
  private openChannel(session: Session, drop: () => void): Promise<SFTPWrapper> {
    const { client } = session;
    return new Promise<SFTPWrapper>((resolve, reject) => {
      // a session that dies before the SFTP channel opened (a stall found by the keepalive)
      client.once('close', () => reject(this.lost(session, 'open SFTP')));
      client.sftp((err, sftp) => {
        if (err) return reject(this.classify(err, 'open SFTP'));
        sftp.on('error', (e: unknown) => {
          session.fault ??= e;
          drop();
          client.end();
        });
        const counted = countReplies(sftp, session.replies);
        sftp.once('close', () => endedChannels.add(counted));
        resolve(counted);
      });
    });
  }

  private sftp(): Promise<SFTPWrapper> {
    return this.sess().then((s) => s.sftp);
  }

  /** Every socket this transport opened and that is still open. */
  private readonly sockets = new Set<Socket>();

  private dropAll(): void {
    for (const s of this.sockets) s.destroy();
    this.session = undefined;
  }

  private sess(): Promise<Session> {
    if (this.opts.signal?.aborted) return Promise.reject(new TarportError('ABORTED', `${this.location}: stopped`, { retryable: false }));
    if (this.closed) return Promise.reject(this.closedError('connect'));
    if (!this.session) {
      const s = this.connectOnce();
      this.session = s;
      s.then(
        () => this.established.add(s),
        () => {
          if (this.session === s) this.session = undefined;
        },
      );
    }
    return this.session;
  }

  private classify(e: unknown, op: string): TarportError {
    // whatever a request cut by close() failed with, it was cut on purpose: never tried again
    if (this.closed && !(e instanceof TarportError && !e.retryable)) return this.closedError(op);
    if (e instanceof TarportError) return e;
    const where = `${op} on ${this.location}`;
    const msg = messageOf(e);
    const sys = (e as NodeJS.ErrnoException | undefined)?.code;
    const level = (e as { level?: string } | undefined)?.level;
    if (level === 'client-authentication') return new TarportError('IO', `${where}: login refused (${msg}); check the user, --identity, or TARPORT_PASSWORD`, { cause: e, retryable: false });
    if (sys === 'ECONNREFUSED' || sys === 'EHOSTUNREACH' || sys === 'ENOTFOUND') return new TarportError('CONNECTION', `${where}: cannot reach the server (${sys}); is it up, and are host and port right?`, { cause: e });
    const code = sftpCode(e);
    if (code === SFTP_STATUS.PERMISSION_DENIED) return new TarportError('IO', `${where}: permission denied; check that the user may write there`, { cause: e, retryable: false });
    if (code === SFTP_STATUS.NO_SUCH_FILE) return new TarportError('NOT_FOUND', `${where}: not found`, { cause: e, retryable: false });
    if (code === SFTP_STATUS.NO_SPACE || code === SFTP_STATUS.QUOTA_EXCEEDED) return new TarportError('IO', `${where}: no space left on the server (${msg}); free space, then run again`, { cause: e, retryable: false });
    // SFTP version 3 (OpenSSH) has no status for a full disk or a quota: it answers FAILURE
    if (code === SFTP_STATUS.FAILURE) return new TarportError('IO', `${where}: the server refused (${msg}); a full disk or a quota is reported this way too`, { cause: e, retryable: false });
    if (code === SFTP_STATUS.OP_UNSUPPORTED || code === SFTP_STATUS.BAD_MESSAGE) return new TarportError('IO', `${where}: the server cannot do this (${msg})`, { cause: e, retryable: false });
    return new TarportError('CONNECTION', `${where}: ${msg}`, { cause: e });
  }

  private retry<T>(op: string, fn: (s: SFTPWrapper) => Promise<T>): Promise<T> {
    // An operation of several requests (a rename's fallback, mkdirs) may ask again on a channel
    // that closed meanwhile: such a request is never sent nor answered, so the channel's close ends
    // the attempt. A request that ssh2 failed itself (no SFTP status) on a channel the server broke
    // is named for that (protocolFault); a status the server sent is its own answer.
    const attempt = async () => {
      const session = await this.sess();
      const sftp = session.sftp;
      const broken = (e: unknown) => (sftpCode(e) === undefined ? this.protocolFault(session, op) : undefined) ?? e;
      return new Promise<T>((resolve, reject) => {
        const gone = () => reject(this.protocolFault(session, op) ?? this.lost(session, op));
        if (endedChannels.has(sftp)) return gone();
        sftp.once('close', gone);
        fn(sftp)
          .then(resolve, (e: unknown) => reject(broken(e)))
          .finally(() => sftp.off('close', gone));
      });
    };
    return withRetries(attempt, { retries: this.retries, classify: (e) => this.classify(e, op), signal: this.closing.signal });
  }

  /**
   * A server that sent what is not SFTP (ssh2 fails the channel: 'sftp-protocol'): the request fails
   * with that, named, rather than as "No response from server". Retryable as a lost connection is
   * (a new session each time, within the retries' bound): the server is at fault, not the files.
   */
  private protocolFault(session: Session, op: string): TarportError | undefined {
    const f = session.fault as { level?: unknown } | undefined;
    if (f?.level !== 'sftp-protocol') return undefined;
    return new TarportError('CONNECTION', `${op} on ${this.location}: the server sent a malformed SFTP packet (${messageOf(f)})`, { cause: f, retryable: true });
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const p = this.path(key);
    return this.retry(`stat ${key}`, (s) =>
      new Promise((resolve, reject) =>
        s.stat(p, (err, st) => {
          if (err) return sftpCode(err) === NO_SUCH_FILE ? resolve(undefined) : reject(err);
          resolve({ name: key.slice(key.lastIndexOf('/') + 1), isDir: st.isDirectory(), size: st.size, mtime: new Date(st.mtime * 1000) });
        }),
      ),
    );
  }

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    const p = folder === '' ? this.root || '/' : this.path(folder);
    const items = await this.retry(`list ${folder || '/'}`, (s) => readFolder(s, p, `${this.location}: listing of ${folder || '/'}`));
    for (const f of items) {
      if (f.filename === '.' || f.filename === '..') continue;
      yield { name: f.filename, isDir: (f.attrs.mode & 0o170000) === 0o040000, size: f.attrs.size, mtime: new Date(f.attrs.mtime * 1000) };
    }
  }

  async read(key: string, opts: ReadOptions = {}): Promise<Readable> {
    const p = this.path(key);
    const st = await this.stat(key);
    if (!st || st.isDir) throw new TarportError('NOT_FOUND', `read ${key} from ${this.location}: not found`);
    // the read follows the caller's signal and close() while it runs, and lets go of both when it closes
    const link = linkSignals([opts.signal, this.closing.signal]);
    const out = resumableRead(async (offset) => {
      const sess = await this.sess();
      return new PipelinedReader(sess.sftp, p, offset, st.size, () => this.lost(sess, `read ${key}`));
    }, {
      offset: opts.offset ?? 0,
      retries: this.retries,
      what: `read ${key} from ${this.location}`,
      signal: link.signal,
      retryable: (e) => this.classify(e, 'read').retryable,
      classify: (e) => this.classify(e, `read ${key}`),
      ...(this.opts.onResume ? { onResume: this.opts.onResume } : {}),
    });
    // 'close' comes once the stream ended and was read, or was destroyed: the read is over either way
    out.once('close', () => link.unlink());
    return out;
  }

  private async mkdirs(key: string): Promise<void> {
    const parent = parentOf(key);
    const segs = [...this.root.split('/').filter(Boolean), ...(parent ? keySegments(parent) : [])];
    if (this.folders.has(`/${segs.join('/')}`)) return;
    let cur = '';
    const s = await this.sftp();
    for (const seg of segs) {
      cur += `/${seg}`;
      if (this.folders.has(cur)) continue;
      const exists = await new Promise<boolean>((r) => s.stat(cur, (err, st) => r(!err && st.isDirectory())));
      if (!exists) {
        await new Promise<void>((resolve, reject) =>
          s.mkdir(cur, (err) => (err ? s.stat(cur, (e2, st) => (!e2 && st.isDirectory() ? resolve() : reject(err))) : resolve())),
        );
      }
      this.folders.add(cur);
    }
  }

  /**
   * Runs `op` in the folder of `key`; when the server answers that a path is missing although the
   * folders were known, forgets them, makes them again and runs `op` once more.
   */
  private async inFolder<T>(key: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (sftpCode(e) !== NO_SUCH_FILE) throw e;
      this.folders.clear();
      await this.retry(`create folder for ${key}`, () => this.mkdirs(key));
      return op();
    }
  }

  async readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    return drainInto(await this.read(key, opts), sink);
  }

  async write(key: string, source: Source, opts: WriteOptions = {}): Promise<{ size: number }> {
    const p = this.path(key);
    const what = `upload ${key} to ${this.location}`;
    await this.retry(`create folder for ${key}`, () => this.mkdirs(key));
    return resumableWrite({
      retries: this.retries,
      what,
      ...(opts.signal ? { signal: opts.signal } : {}),
      retryable: (e) => this.classify(e, 'upload').retryable,
      upload: async (offset) => {
        let sent = 0;
        const src = readableFrom(source, offset, what, (n) => (sent = n));
        const sess = await this.sess().catch((e: unknown) => {
          throw this.classify(e, `upload ${key}`);
        });
        const s = sess.sftp;
        const handle = await this.inFolder(key, () =>
          new Promise<Buffer>((resolve, reject) => s.open(p, offset > 0 ? 'r+' : 'w', (err, h) => (err ? reject(err) : resolve(h)))),
        ).catch((e: unknown) => {
          throw this.classify(e, `upload ${key}`);
        });
        const sink = new PipelinedWriter(s, handle, offset, () => this.lost(sess, `upload ${key}`));
        try {
          await pipeline(src, sink);
          return sent;
        } catch (e) {
          throw this.classify(e, `upload ${key}`);
        } finally {
          await closeHandle(s, handle);
        }
      },
      remoteSize: async () => (await this.stat(key))?.size,
      cleanup: () => this.remove(key),
      ...(this.opts.onResume ? { onResume: this.opts.onResume } : {}),
    });
  }

  async rename(from: string, to: string): Promise<void> {
    const [a, b] = [this.path(from), this.path(to)];
    await this.retry(`create folder for ${to}`, () => this.mkdirs(to));
    await this.retry(`rename ${from} to ${to}`, (s) => this.inFolder(to, () => renameOver(s, a, b)));
  }

  async remove(key: string): Promise<void> {
    const p = this.path(key);
    await this.retry(`remove ${key}`, (s) =>
      new Promise<void>((resolve, reject) => s.unlink(p, (err) => (err && sftpCode(err) !== NO_SUCH_FILE ? reject(err) : resolve()))),
    );
  }

  /**
   * Starts the SSH session now (see Transport.connectEarly): the handshake takes a few round trips
   * and ~0.1-0.3 s of CPU on both ends, which then overlaps reading the archive or the consumer's
   * state. A session that fails here is dropped (sess), and the first request connects again and
   * reports why.
   */
  connectEarly(): void {
    this.sess().catch(() => undefined);
  }

  /**
   * Ends the session and cuts what is still in flight: a handshake under way (a command that failed
   * before its first request), or a request a bounded caller gave up on (the acknowledgement's 5 s).
   * Neither is waited for: a slow or silent server must not hold the exit for its timeout and
   * retries. Anything asked after, or cut by it, ends ABORTED.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort(this.closedError('request'));
    const s = this.session;
    this.session = undefined;
    if (s && this.established.has(s)) (await s.catch(() => undefined))?.client.end();
    else s?.catch(() => undefined);
    // end() says goodbye; the sockets go now, whatever the server does with it
    for (const sock of this.sockets) sock.destroy();
  }

  /** Sessions whose handshake completed. */
  private readonly established = new WeakSet<Promise<Session>>();
}

/**
 * Renames `a` to `b`, replacing `b`. posix-rename@openssh.com does it in one step. A server without
 * it (ssh2 then refuses to send it) gets plain SFTP rename, which refuses an existing target: `b` is
 * removed first, the one moment a reader can find it missing (docs/repo-format.md, "Renames"). Only
 * then: any other failure must not remove `b`, which may be the very file an earlier try of this
 * rename moved into place (its answer lost with its connection): that try is found by its source
 * gone and its target there, and counts as done, before either way of renaming removes anything.
 */
export function renameOver(s: SFTPWrapper, a: string, b: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const exists = (p: string) => new Promise<boolean | undefined>((r) => s.stat(p, (e) => r(!e ? true : sftpCode(e) === NO_SUCH_FILE ? false : undefined)));
    // an earlier try whose answer was lost: its source gone, its target there
    const doneBefore = async () => (await exists(a)) === false && (await exists(b)) === true;
    const plain = () =>
      void doneBefore().then((done) => (done ? resolve() : s.unlink(b, () => s.rename(a, b, (e2) => (e2 ? reject(e2) : resolve())))), reject);
    try {
      s.ext_openssh_rename(a, b, (err) => {
        if (!err) return resolve();
        if (sftpCode(err) === SFTP_STATUS.OP_UNSUPPORTED) return plain();
        if (sftpCode(err) !== NO_SUCH_FILE) return reject(err);
        void doneBefore().then((done) => (done ? resolve() : reject(err)), reject);
      });
    } catch {
      plain(); // ssh2 throws when the server did not offer posix-rename
    }
  });
}

/** SFTP channels that closed: a request sent on one is never answered (ssh2 drops it unanswered). */
const endedChannels = new WeakSet<SFTPWrapper>();

/**
 * Closes a remote file handle; a connection that died never answers, so do not wait long, and not
 * at all once the channel closed (close() cutting a transfer would otherwise hold it 2 s).
 */
function closeHandle(s: SFTPWrapper, handle: Buffer): Promise<void> {
  if (endedChannels.has(s)) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const t = setTimeout(resolve, 2000);
    try {
      s.close(handle, () => {
        clearTimeout(t);
        resolve();
      });
    } catch {
      clearTimeout(t);
      resolve();
    }
  });
}

/** Reads a remote file with many requests in flight, delivering bytes in order. */
class PipelinedReader extends Readable {
  private handle: Buffer | undefined;
  private next: number;
  private readonly inflight = new Map<number, Promise<Buffer>>();
  private delivering = false;

  constructor(
    private readonly sftp: SFTPWrapper,
    private readonly path: string,
    start: number,
    private readonly size: number,
    /** Why nothing more will come: the session's connection ended. */
    private readonly lost: () => Error,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.next = start;
    this.cursor = start;
  }

  private cursor: number;

  private readonly onClose = () => this.destroy(this.lost());

  override _construct(cb: (e?: Error | null) => void): void {
    this.sftp.once('close', this.onClose);
    this.once('close', () => this.sftp.off('close', this.onClose));
    this.sftp.open(this.path, 'r', (err, h) => {
      if (err) return cb(err);
      this.handle = h;
      cb();
    });
  }

  private fill(): void {
    while (this.inflight.size < DEPTH && this.next < this.size) {
      const pos = this.next;
      const len = Math.min(CHUNK, this.size - pos);
      this.next += len;
      this.inflight.set(pos, this.readAt(pos, len));
    }
  }

  /** One chunk, completed with follow-up reads if the server answers short. */
  private async readAt(pos: number, len: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = await new Promise<number>((resolve, reject) =>
        this.sftp.read(this.handle!, buf, got, len - got, pos + got, (err, bytes) => (err ? reject(err) : resolve(bytes))),
      );
      if (n === 0) throw new Error(`unexpected end of file at ${pos + got} of ${this.size}`);
      got += n;
    }
    return buf;
  }

  override _read(): void {
    if (this.delivering) return;
    this.delivering = true;
    void (async () => {
      try {
        for (;;) {
          if (this.cursor >= this.size) {
            this.push(null);
            return;
          }
          this.fill();
          const p = this.inflight.get(this.cursor)!;
          const chunk = await p;
          this.inflight.delete(this.cursor);
          this.cursor += chunk.length;
          if (!this.push(chunk)) return;
        }
      } catch (e) {
        this.destroy(e as Error);
      } finally {
        this.delivering = false;
      }
    })();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    for (const p of this.inflight.values()) p.catch(() => undefined);
    if (this.handle) void closeHandle(this.sftp, this.handle).then(() => cb(err));
    else cb(err);
  }
}

/**
 * Writes a remote file with up to WRITE_DEPTH requests in flight, WRITE_DEPTH_MAX once WRITE_RAMP
 * bytes were confirmed; `finish` only once every write was confirmed. Exported for its unit test.
 */
export class PipelinedWriter extends Writable {
  private pending = 0;
  /** Bytes the server confirmed: past WRITE_RAMP, more writes go out at once. */
  private answered = 0;
  private failed: Error | undefined;
  private waiting: (() => void) | undefined;

  private readonly onClose = () => {
    // ssh2 does not answer requests still in flight when the connection drops: fail them here
    if (!this.failed) this.failed = this.lost();
    this.settle();
  };

  constructor(
    private readonly sftp: SFTPWrapper,
    private readonly handle: Buffer,
    private pos: number,
    private readonly lost: () => Error,
  ) {
    super({ highWaterMark: 1 << 20 });
    sftp.once('close', this.onClose);
    this.once('close', () => sftp.off('close', this.onClose));
  }

  private settle(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }

  override _write(chunk: Buffer, _e: BufferEncoding, cb: (e?: Error | null) => void): void {
    let off = 0;
    // parts go out while fewer than the depth are unanswered; the rest of the chunk waits for answers
    const send = () => {
      if (this.failed) return cb(this.failed);
      for (; off < chunk.length && this.pending < this.depth(); off += CHUNK) {
        const part = chunk.subarray(off, Math.min(chunk.length, off + CHUNK));
        const at = this.pos;
        this.pos += part.length;
        this.pending++;
        this.sftp.write(this.handle, part, 0, part.length, at, (err) => {
          this.pending--;
          this.answered += part.length;
          if (err && !this.failed) this.failed = err;
          this.settle();
        });
      }
      if (off < chunk.length || this.pending >= this.depth()) this.waiting = send;
      else cb();
    };
    send();
  }

  private depth(): number {
    return this.answered >= WRITE_RAMP ? WRITE_DEPTH_MAX : WRITE_DEPTH;
  }

  override _final(cb: (e?: Error | null) => void): void {
    const check = () => {
      if (this.failed) cb(this.failed);
      else if (this.pending === 0) cb();
      else this.waiting = check;
    };
    check();
  }
}
