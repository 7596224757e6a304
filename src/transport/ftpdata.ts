import { once } from 'node:events';
import { connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import { TLSSocket, connect as tlsConnect } from 'node:tls';
import { FTPError, type FTPContext, type FTPResponse } from 'basic-ftp';
import { TarportError } from '../errors.js';
import { sendFrom } from './source.js';
import type { ByteSink, Source } from './types.js';

// FTP data connections of our own, on basic-ftp's control connection. basic-ftp moves data through
// streams: every socket read is a fresh 64 KiB buffer, which at loopback speed costs more in page
// faults than the transfer itself (~120,000 per GiB downloaded on this kind of VM). Here a download
// is read into two 1 MiB buffers that are lent to the sink in turn, and an upload from a file is
// sent from three buffers of its own.

const SLAB = 1 << 20;
/** A slab is handed on when less than this is left: reads stay large. */
const MIN_READ = 64 << 10;

export interface DataOptions {
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  /** Remembers, per server, that EPSV was refused, so later transfers go straight to PASV. */
  readonly passive: { epsvRefused?: boolean };
}

/** A data connection that went silent for the idle timeout: dropped, the transfer resumes. */
export class StalledError extends TarportError {
  constructor(message: string) {
    super('CONNECTION', message, { retryable: true });
  }
}

/**
 * The port of a passive data connection: EPSV, or PASV where the server refuses EPSV. The data
 * connection always goes to the control connection's host. For PASV that ignores the address the
 * server names: that defeats FTP bounce, and it fixes servers behind NAT that name an inner address
 * (as curl's --ftp-skip-pasv-ip does).
 */
async function passivePort(ftp: FTPContext, state: DataOptions['passive']): Promise<number> {
  if (!state.epsvRefused) {
    try {
      const res = await ftp.request('EPSV');
      const m = /[|!]{3}(\d+)[|!]/.exec(res.message);
      if (!m) throw new Error(`cannot read the server's answer to EPSV: ${res.message}`);
      return Number(m[1]);
    } catch (e) {
      if (!(e instanceof FTPError) || e.code < 500) throw e;
      state.epsvRefused = true;
    }
  }
  const res = await ftp.request('PASV');
  const m = /(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)/.exec(res.message);
  if (!m) throw new Error(`cannot read the server's answer to PASV: ${res.message}`);
  return (Number(m[5]) & 255) * 256 + (Number(m[6]) & 255);
}

/**
 * The TLS handshake of a data connection. Many servers (vsftpd) complete it only after their 150,
 * and getCipher() cannot tell: with a resumed session it names the session's cipher before the
 * handshake is done.
 */
const secured = new WeakMap<Socket, Promise<void>>();

/**
 * Connects the data connection. Over FTPS it is TLS with the control connection's options (the
 * certificate is verified the same way) and its session, which servers require (vsftpd's
 * require_ssl_reuse). The handshake completes only once the server has the transfer command.
 */
async function openData(ftp: FTPContext, opts: DataOptions, onread?: OnReadOpts): Promise<Socket> {
  const port = await passivePort(ftp, opts.passive);
  const host = (ftp.socket.remoteAddress ?? '').replace(/^::ffff:/i, '');
  let s: Socket;
  if (ftp.socket instanceof TLSSocket) {
    const t = tlsConnect({ ...ftp.tlsOptions, host, port, session: ftp.tlsSessionStore ?? ftp.socket.getSession(), ...(onread ? { onread } : {}) });
    // TLS 1.3 tickets are single-use: keep the newest for the next data connection
    t.on('session', (sess: Buffer) => (ftp.tlsSessionStore = sess));
    const done = once(t, 'secureConnect').then(() => undefined);
    done.catch(() => undefined); // the socket's own error is heard elsewhere
    secured.set(t, done);
    s = t;
  } else {
    s = netConnect({ host, port, ...(onread ? { onread } : {}) });
  }
  s.setTimeout(opts.timeoutMs, () => s.destroy(new StalledError(`the data connection to ${host}:${port} stalled: nothing crossed it for ${opts.timeoutMs / 1000} s`)));
  try {
    await once(s, 'connect', { signal: opts.signal });
  } catch (e) {
    s.destroy();
    throw e;
  }
  return s;
}

/** Sends a transfer command; `onStart` hears the preliminary reply (150/125). */
function transferCommand(ftp: FTPContext, command: string, onStart?: () => void): Promise<FTPResponse> {
  const p = ftp.handle(command, (res, task) => {
    if (res instanceof Error) task.reject(res);
    else if (res.code < 200) onStart?.();
    else if (res.code < 300) task.resolve(res);
    else task.reject(new FTPError(res)); // a 3xx here asks for something a transfer cannot give
  }) as Promise<FTPResponse>;
  p.catch(() => undefined); // awaited later; a failure before that must not go unhandled
  return p;
}

/**
 * Which connection's silence counts as a stall. The control connection is watched while a reply is
 * due: up to the transfer's preliminary reply (150), and again from the end of the data until the
 * final one (226); between the two it may sleep for as long as the data flows, and the data
 * connection's own timeout watches the transfer. basic-ftp arms the control timeout for every
 * command it sends and disarms it when no command is open; this keeps to that rule.
 */
class ControlWatch {
  private dataDone = false;
  constructor(private readonly ftp: FTPContext) {}
  /** The preliminary reply came: the data connection is watched now. */
  started(): void {
    if (!this.dataDone) this.ftp.socket.setTimeout(0);
  }
  /** The data connection is done: the final reply is due within the idle timeout. */
  dataEnded(): void {
    this.dataDone = true;
    this.ftp.socket.setTimeout(this.ftp.timeout);
  }
  /** No command open any more. */
  done(): void {
    this.ftp.socket.setTimeout(0);
  }
}

async function watched<T>(ftp: FTPContext, fn: (w: ControlWatch) => Promise<T>): Promise<T> {
  const w = new ControlWatch(ftp);
  try {
    return await fn(w);
  } finally {
    w.done();
  }
}

/**
 * When a data connection fails, the server's reply on the control connection usually says why (552
 * disk full, 426 aborted): prefer it to the bare socket error, waiting for it a moment.
 */
async function preferReply(control: Promise<FTPResponse>, e: unknown): Promise<never> {
  if (e instanceof StalledError) throw e; // a silent link: the server has nothing to say either
  const reply = await Promise.race([control.then(() => undefined, (r: unknown) => r), new Promise((r) => setTimeout(r, 1000, undefined))]);
  throw reply instanceof FTPError ? reply : e;
}

/**
 * RETR `path` from byte `offset` into `sink`. With `lend` (plain FTP), bytes arrive in two 1 MiB
 * slabs of this transfer's own: while the sink has one, the socket fills the other; when both are out, reading
 * pauses until the sink gives one back. Without `lend`, the sink gets the socket's own fresh chunks
 * (for consumers that keep them, such as a stream). Resolves when the data connection ended and the
 * server confirmed the transfer.
 */
export async function retrieve(ftp: FTPContext, path: string, offset: number, sink: ByteSink, opts: DataOptions & { readonly lend: boolean }): Promise<void> {
  await transferIn(ftp, `RETR ${path}`, offset, sink, opts);
}

/**
 * A folder listing (`command` is LIST or MLSD with its path) on a data connection of our own, read
 * up to `maxBytes` and `maxEntries` lines: a listing is names and sizes, and a server that sends
 * more is not an honest repository. basic-ftp would gather any listing whole in memory.
 */
export async function listing(ftp: FTPContext, command: string, what: string, limits: { readonly maxBytes: number; readonly maxEntries: number }, opts: DataOptions): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  let lines = 0;
  await transferIn(ftp, command, 0, (chunk) => {
    bytes += chunk.length;
    for (let i = chunk.indexOf(0x0a); i >= 0; i = chunk.indexOf(0x0a, i + 1)) lines++;
    if (bytes > limits.maxBytes) throw new ListingTooLargeError(`${what}: the server sent more than the ${limits.maxBytes} bytes a folder listing may have; it is not an honest repository`);
    if (lines > limits.maxEntries) throw new ListingTooLargeError(`${what}: the server listed more than the ${limits.maxEntries} entries a folder may have; it is not an honest repository`);
    chunks.push(chunk);
  }, { ...opts, lend: false });
  return Buffer.concat(chunks);
}

/** A listing past its caps: the server lies (exit 3); asking again cannot help. */
export class ListingTooLargeError extends TarportError {
  constructor(message: string) {
    super('INTEGRITY', message, { retryable: false });
  }
}

async function transferIn(ftp: FTPContext, command: string, offset: number, sink: ByteSink, opts: DataOptions & { readonly lend: boolean }): Promise<void> {
  // Over TLS, Node decrypts every record it has in one go, even after the read callback asked for
  // a pause: those bytes would land in a slab the sink still has. FTPS gets fresh chunks instead
  // (16 KiB each; the decryption dominates there anyway).
  const lending = opts.lend && !(ftp.socket instanceof TLSSocket);
  let data: Socket | undefined;
  let reject: (e: unknown) => void = () => undefined;
  const failed = new Promise<never>((_, r) => (reject = r));
  failed.catch(() => undefined);
  let dead = false; // failed: the sink hears nothing more, the data connection is closed
  const fail = (e: unknown): void => {
    if (dead) return;
    dead = true;
    data?.destroy();
    reject(e);
  };
  const slabs = lending ? [Buffer.allocUnsafe(SLAB), Buffer.allocUnsafe(SLAB)] : [];
  let cur = 0;
  let pos = 0;
  let lent: Promise<void> | undefined; // the other slab, while the sink has it
  let full = false; // this slab is full and waits for the other one to come back
  let broken: unknown; // a failure of the connection itself, where the server's reply says more
  /** Hands `chunk` to the sink; says whether the sink keeps it for a while (then `after` follows). */
  const give = (chunk: Buffer, after: () => void): boolean => {
    if (dead) return false;
    let r: void | Promise<void>;
    try {
      r = sink(chunk);
    } catch (e) {
      fail(e);
      return false;
    }
    if (!r) return false;
    lent = r.then(() => {
      lent = undefined;
      after();
    }, fail);
    return true;
  };
  const lend = (): void => {
    const chunk = slabs[cur]!.subarray(0, pos);
    cur ^= 1;
    pos = 0;
    give(chunk, () => {
      if (!full) return;
      full = false;
      lend();
      data?.setTimeout(opts.timeoutMs);
      data?.resume();
    });
  };
  const onread: OnReadOpts = {
    // after a pause, the next read goes into the slab that is out now: it is back before reading resumes
    buffer: () => (full ? slabs[cur ^ 1]! : slabs[cur]!.subarray(pos)),
    callback: (n) => {
      if (dead) return false;
      if (full) {
        // reading was stopped: bytes now would land in the slab the sink has (TLS decrypts a batch
        // of records past a stop, which is why TLS never lends)
        fail(new TarportError('INTERNAL', `internal error: ${command}: the data connection delivered after it was paused`));
        return false;
      }
      pos += n;
      if (SLAB - pos >= MIN_READ) return true;
      if (lent) {
        full = true;
        data?.setTimeout(0); // waiting for the sink is not a stalled server
        return false;
      }
      lend();
      return true;
    },
  };
  const onAbort = () => fail(opts.signal.reason);
  opts.signal.addEventListener('abort', onAbort, { once: true });
  try {
    data = await openData(ftp, opts, lending ? onread : undefined);
    data.on('error', (e) => {
      if (!dead) broken = e;
      fail(e);
    });
    if (!lending) {
      const d = data;
      const resume = () => {
        d.setTimeout(opts.timeoutMs);
        d.resume();
      };
      d.on('data', (chunk: Buffer) => {
        if (!give(chunk, resume)) return;
        d.pause();
        d.setTimeout(0); // a reader that takes its time is not a stalled server
      });
    }
    const ended = once(data, 'end');
    ended.catch(() => undefined);
    if (offset > 0) await ftp.request(`REST ${offset}`);
    await watched(ftp, async (watch) => {
      void ended.then(() => watch.dataEnded(), () => undefined);
      const control = transferCommand(ftp, command, () => watch.started());
      try {
        await Promise.race([Promise.all([ended, control]), failed]);
      } catch (e) {
        data?.destroy();
        // a sink's or our own failure stands; a broken connection is better told by the server
        if (e !== broken && !(e instanceof FTPError)) throw e;
        await preferReply(control, e);
      }
      // the last slab: what the sink still has, then what the socket left
      while (lent) await Promise.race([lent, failed]);
      if (pos > 0) lend();
      if (lent) await Promise.race([lent, failed]);
    });
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    data?.destroy();
  }
}

/** The most an upload hands the socket at once: each completed piece is progress on the link. */
const PIECE = 128 << 10;

/**
 * The idle timeout of an upload's data connection. Node's own socket timeout lets its first expiry
 * pass when a queued write made partial progress since it was queued (net.js `_onTimeout`), and the
 * kernel keeps taking a trickle for seconds after the far end stopped reading: a silent link was
 * found only after up to twice the timeout. Here the data goes out in pieces of PIECE bytes, in
 * order, at most two queued at once, and the timeout runs from the last piece the kernel took,
 * only while a piece waits (a slow source is not a stalled server).
 */
class WriteWatch {
  private timer: NodeJS.Timeout | undefined;
  private writing = 0;
  /** Chunks go out one after another: a chunk's pieces never interleave with the next one's. */
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly d: Socket,
    private readonly ms: number,
  ) {}

  /** Sends `chunk`; resolves when the kernel took all of it. `failed` is the connection's error so far. */
  send(chunk: Buffer, failed: () => unknown): Promise<void> {
    const p = this.tail.then(() => this.pieces(chunk, failed));
    this.tail = p.catch(() => undefined);
    return p;
  }

  private async pieces(chunk: Buffer, failed: () => unknown): Promise<void> {
    const queued: Promise<void>[] = [];
    for (let at = 0; at < chunk.length; at += PIECE) {
      if (queued.length >= 2) await queued.shift();
      const q = this.piece(chunk.subarray(at, at + PIECE), failed);
      q.catch(() => undefined); // heard through Promise.all, or by the shift that awaits it
      queued.push(q);
    }
    await Promise.all(queued);
  }

  private piece(buf: Buffer, failed: () => unknown): Promise<void> {
    if (this.writing++ === 0) this.arm();
    return new Promise<void>((resolve, reject) =>
      this.d.write(buf, (e) => {
        if (--this.writing === 0) this.stop();
        else this.arm(); // progress: the clock starts again for the piece still queued
        const f = e ?? failed();
        if (f) reject(f);
        else resolve();
      }),
    );
  }

  /** The end of the data is sent and must be taken within the timeout too. */
  ending(): void {
    this.arm();
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.d.destroy(new StalledError(`the data connection to ${this.d.remoteAddress ?? '?'}:${this.d.remotePort ?? '?'} stalled: the server took nothing for ${this.ms / 1000} s`)), this.ms);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * STOR (or APPE, to resume) `path` with the source's bytes from `from` on. Resolves with the bytes
 * sent once the server confirmed the transfer.
 */
export async function store(ftp: FTPContext, verb: 'STOR' | 'APPE', path: string, source: Source, from: number, what: string, opts: DataOptions & { readonly onSourceEnd?: (sent: number) => void }): Promise<number> {
  let data: Socket | undefined;
  const onAbort = () => data?.destroy(opts.signal.reason instanceof Error ? opts.signal.reason : new TarportError('ABORTED', `${what}: stopped`));
  opts.signal.addEventListener('abort', onAbort, { once: true });
  try {
    data = await openData(ftp, opts);
    const d = data;
    let failure: unknown;
    d.on('error', (e) => (failure ??= e));
    let start: () => void = () => undefined;
    const started = new Promise<void>((r) => (start = r));
    // a data connection that times out before the transfer began ends the wait for it
    const dataFailed = once(d, 'close').then(() => {
      throw failure ?? new TarportError('CONNECTION', `${what}: the data connection closed before the transfer began`);
    });
    dataFailed.catch(() => undefined);
    const writes = new WriteWatch(d, opts.timeoutMs);
    return await watched(ftp, async (watch) => {
      const control = transferCommand(ftp, `${verb} ${path}`, () => {
        watch.started();
        start();
      });
      try {
        await Promise.race([started, control, dataFailed]);
        // ending the connection (an empty source) before the handshake is done would cut it
        await secured.get(d);
        d.setTimeout(0); // the upload watches its writes itself
        const sent = await sendFrom(source, from, what, (chunk) => writes.send(chunk, () => failure));
        writes.ending();
        d.end();
        await once(d, 'finish');
        // every byte went out; what follows is the server's confirmation (226), which may not come
        opts.onSourceEnd?.(sent);
        writes.stop();
        d.setTimeout(opts.timeoutMs);
        watch.dataEnded();
        await control;
        return sent;
      } catch (e) {
        writes.stop();
        d.destroy();
        if (e instanceof TarportError && !e.retryable) throw e; // the source failed, not the server
        return await preferReply(control, failure ?? e);
      }
    });
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    data?.destroy();
  }
}
