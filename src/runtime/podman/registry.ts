import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarportError, messageOf } from '../../errors.js';
import type { LayerStream } from '../types.js';

/** A blob the registry serves: bytes in memory (config, manifest) or a stream opened when asked for. */
export interface ServedBlob {
  readonly digest: string;
  readonly size: number;
  readonly mediaType: string;
  readonly bytes?: Buffer;
  readonly open?: () => Promise<LayerStream>;
}

/** One image as a registry serves it: its manifest (by the tag and by digest) and its blobs. */
export interface ServedImage {
  readonly manifest: ServedBlob & { readonly bytes: Buffer };
  readonly blobs: readonly ServedBlob[];
}

/** What a pull took from the registry: requests answered and blob bytes sent. */
export interface RegistryTraffic {
  requests: number;
  bytesSent: number;
  /** Blob digests whose bytes were sent in full. */
  readonly blobsSent: Set<string>;
  /**
   * Streamed blobs in the order their last chunk was handed to the socket: the order Turns gave
   * them. (blobsSent's order is when each response finished, which also depends on how fast the
   * puller reads each connection.)
   */
  readonly lastChunks: string[];
  /** The first blob that could not be opened or read, and why. */
  fault?: unknown;
}

/**
 * A read-only registry of one image on 127.0.0.1 (the distribution API's GET and HEAD of one
 * manifest and its blobs), for the length of one load: Podman's API service pulls only from
 * registries (its libpod pull refuses oci: and other local transports), and a pull reads each
 * layer once, where a load spools the upload to a file and then unpacks that file again.
 * The repository name holds 128 random bits: another local user cannot guess what to ask for in
 * the seconds it lives. Podman checks every blob against the manifest's digest as it copies it.
 */
export class LoopbackRegistry {
  readonly traffic: RegistryTraffic = { requests: 0, bytesSent: 0, blobsSent: new Set(), lastChunks: [] };
  private readonly blobs: Map<string, ServedBlob>;
  /** Each blob's place in the manifest: streamed blobs go out earliest first (Turns). */
  private readonly places: Map<string, number>;
  private readonly turns: Turns;

  /** 127.0.0.1:port, once listening. */
  host = '';
  /** The first fault of the listening server (an accept that failed: out of file descriptors), for the load's report. */
  serverFault: Error | undefined;

  private constructor(
    private readonly server: Server,
    readonly repository: string,
    private readonly image: ServedImage,
    patienceMs: number,
  ) {
    this.turns = new Turns(patienceMs);
    this.blobs = new Map(image.blobs.map((b) => [b.digest, b]));
    this.places = new Map(image.blobs.map((b, i) => [b.digest, i]));
  }

  /**
   * Whether a blob being streamed waits for its next bytes from tarport's side (a layer that
   * downloads, or whose download has not begun): Podman's silence then is the repository's.
   */
  waitingForSource(): boolean {
    return this.turns.starving();
  }

  /** Starts the registry on an ephemeral loopback port. */
  static async start(image: ServedImage, opts: { patienceMs?: number } = {}): Promise<LoopbackRegistry> {
    const repository = `tarport-load-${randomBytes(16).toString('hex')}`;
    const server = createServer();
    const reg = new LoopbackRegistry(server, repository, image, opts.patienceMs ?? PATIENCE_MS);
    server.on('request', (req, res) => reg.answer(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new TarportError('IO', `could not open a loopback port for Podman to pull from: ${messageOf(e)}`, { cause: e })));
      server.listen(0, '127.0.0.1', () => resolve());
    });
    // heard each time (unheard, a second would end the agent); Podman's pull fails with its own words
    server.on('error', (e) => (reg.serverFault ??= e));
    reg.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    return reg;
  }

  /** host:port/repository:tag, the reference Podman pulls. */
  get reference(): string {
    return `${this.host}/${this.repository}:load`;
  }

  /** Stops listening and ends every connection still open (a pull that gave up keeps none). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private answer(req: IncomingMessage, res: ServerResponse): void {
    this.traffic.requests++;
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) return send(res, 405, { errors: [{ code: 'UNSUPPORTED', message: 'read-only registry' }] });
    const path = (req.url ?? '').split('?')[0]!;
    if (path === '/v2/' || path === '/v2') return send(res, 200, {});
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (!m || m[1] !== this.repository) return send(res, 404, { errors: [{ code: 'NAME_UNKNOWN', message: 'repository name not known to registry' }] });
    const manifest = this.image.manifest;
    if (m[2] === 'manifests') {
      if (m[3] !== 'load' && m[3] !== manifest.digest) return send(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
      return this.sendBlob(res, manifest, head);
    }
    // digests hold no characters that need escaping: the name is looked up as sent
    const blob = this.blobs.get(m[3]!);
    if (!blob) return send(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] });
    this.sendBlob(res, blob, head);
  }

  private sendBlob(res: ServerResponse, blob: ServedBlob, head: boolean): void {
    const headers = {
      'Content-Type': blob.mediaType,
      'Content-Length': String(blob.size),
      'Docker-Content-Digest': blob.digest,
      'Docker-Distribution-API-Version': 'registry/2.0',
    };
    if (head || blob.bytes) {
      res.writeHead(200, headers);
      if (head) return void res.end();
      this.traffic.bytesSent += blob.bytes!.length;
      this.traffic.blobsSent.add(blob.digest);
      return void res.end(blob.bytes);
    }
    this.stream(res, blob, headers).catch((e: unknown) => {
      // a fetch that failed, a file gone, a decoder fault, a puller that hung up: the response ends
      // short (or with 500), the pull fails, and the first fault is kept for the caller
      this.traffic.fault ??= e;
      if (res.headersSent) res.destroy();
      else send(res, 500, { errors: [{ code: 'UNKNOWN', message: messageOf(e) }] });
    });
  }

  private async stream(res: ServerResponse, blob: ServedBlob, headers: Record<string, string>): Promise<void> {
    // the turn is taken when the layer is asked for, not once it is open: a later layer must not
    // run ahead while an earlier one is still being opened
    const turn = this.turns.join(this.places.get(blob.digest) ?? 0);
    try {
      const src = await blob.open!();
      res.writeHead(200, headers);
      src.on('data', (c: Buffer) => (this.traffic.bytesSent += c.length));
      await pipeline(src, inTurn(res, blob.size, this.turns, turn, src.release, () => this.traffic.lastChunks.push(blob.digest)));
    } finally {
      this.turns.leave(turn);
    }
    this.traffic.blobsSent.add(blob.digest);
  }
}

/**
 * The order in which the layers being streamed get this thread, which decompresses them all: the
 * earliest in the manifest first. The puller applies layers in that order, each once it has all of
 * it, so a base layer that arrives whole early lets it apply while later ones are still being
 * decompressed; shared out evenly, every layer arrived late, the largest last, and Podman applied
 * them all after the last byte. A stream goes on after each chunk only while every stream before it
 * waits for its own turn, or has waited on its socket for the patience (its puller is behind on it):
 * the thread idles for the order's sake that long at most, and a puller that reads one blob at a
 * time, in any order, is served all the same.
 */
export class Turns {
  private readonly streams: Turn[] = [];
  private seq = 0;

  constructor(private readonly patienceMs = PATIENCE_MS) {}

  /** A stream of the blob at `place` in the manifest (a repeated request comes after the first). */
  join(place: number): Turn {
    // it waits for its blob to open (a download that has not begun) until its first chunk
    const t: Turn = { place, seq: this.seq++, waitingSince: undefined, parked: undefined, starved: true };
    this.streams.push(t);
    this.streams.sort((a, b) => a.place - b.place || a.seq - b.seq);
    return t;
  }

  /** `t` wrote a chunk the socket did not take at once: once it waited long enough, later streams go. */
  wait(t: Turn): void {
    t.waitingSince = performance.now();
    if (this.streams.some((s) => s.parked)) this.wakeLater();
  }

  /** Calls `go` when `t` may take its next chunk: now, or once every stream before it is behind or ended. */
  next(t: Turn, go: () => void): void {
    t.waitingSince = undefined;
    if (this.mayGo(t)) return go();
    t.parked = go;
    // a stream before it that waits on its socket holds it up for the patience at most
    this.wakeLater();
  }

  /** Whether a stream waits for its source's next bytes (Turn.starved). */
  starving(): boolean {
    return this.streams.some((s) => s.starved);
  }

  /** `t` ended (done, failed or cut off). */
  leave(t: Turn): void {
    const i = this.streams.indexOf(t);
    if (i >= 0) this.streams.splice(i, 1);
    this.wake();
  }

  /** A stream that waits for its turn, or whose puller is behind on it, holds up no later one. */
  private holdsUp(s: Turn, now: number): boolean {
    return !s.parked && !(s.waitingSince !== undefined && now - s.waitingSince >= this.patienceMs);
  }

  private mayGo(t: Turn): boolean {
    const now = performance.now();
    for (const s of this.streams) {
      if (s === t) return true;
      if (this.holdsUp(s, now)) return false;
    }
    return true;
  }

  /** Not a reason to keep the process: the streams' own sockets keep it while they last. */
  private wakeLater(): void {
    setTimeout(() => this.wake(), this.patienceMs + 1).unref();
  }

  /** The earliest parked stream that nothing before it holds up goes on (later, not inside a write). */
  private wake(): void {
    const now = performance.now();
    for (const s of this.streams) {
      const go = s.parked;
      if (go) {
        s.parked = undefined;
        queueMicrotask(go);
        return;
      }
      if (this.holdsUp(s, now)) return;
    }
  }
}

/** One stream in Turns: its place, and whether it waits on its socket or for its turn. */
export interface Turn {
  readonly place: number;
  readonly seq: number;
  /** When its last write began to wait on the socket; undefined while it has the thread. */
  waitingSince: number | undefined;
  parked: (() => void) | undefined;
  /** It asked its source for the next chunk and has none yet (not its socket's nor its turn's wait). */
  starved: boolean;
}

/**
 * How long a stream's socket may be full before the streams after it go on. A full socket mostly
 * means Podman's reader of that blob is busy writing it to disk, not that it wants the layer later:
 * every millisecond this thread idles then is lost (the README's "Performance" gives the
 * measurements that chose 5 ms over 100 ms and over no order at all).
 */
const PATIENCE_MS = 5;

/**
 * Writes the `size` bytes of a blob to `res` in its turn (Turns), each chunk given back to the
 * decompressor (`release`) once the socket took it: a response's write calls back when its bytes
 * went to the kernel, or with an error when the connection ended first (the puller hung up, or
 * close() ended it), which fails the copy. The last chunk leaves the turns at once, and its end goes
 * out without waiting: a puller that has every byte may close the connection straight away (Podman
 * does), which is then no fault.
 */
export function inTurn(res: ServerResponse, size: number, turns: Turns, turn: Turn, release?: (chunk: Buffer) => void, onLast?: () => void): Writable {
  let given = 0;
  let allWritten = false;
  let closed = false;
  let finished: (() => void) | undefined;
  const w = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _e, cb) {
      turn.starved = false;
      given += chunk.length;
      const last = given >= size;
      if (last) {
        turns.leave(turn);
        onLast?.();
      }
      const took = res.write(chunk, (e) => {
        if (e) return cb(e);
        release?.(chunk);
        if (!last) {
          return turns.next(turn, () => {
            turn.starved = true;
            cb();
          });
        }
        allWritten = true;
        cb();
      });
      if (!took && !last) turns.wait(turn);
    },
    final(cb) {
      // a source that ended short waits on the socket now, not on itself
      turn.starved = false;
      if (closed) return cb();
      let once = false;
      finished = () => {
        if (once) return;
        once = true;
        cb();
      };
      res.end(() => finished?.());
    },
  });
  // a connection that closes with bytes not yet written must not leave the copy waiting for them
  res.once('close', () => {
    closed = true;
    if (res.writableFinished) return;
    if (allWritten) return finished?.();
    w.destroy(new TarportError('IO', 'the puller closed the connection before the blob was sent'));
  });
  return w;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(text)), 'Docker-Distribution-API-Version': 'registry/2.0' });
  res.end(text);
}
