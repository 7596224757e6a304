import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { TarportError, messageOf } from '../../errors.js';
import { pipeGivingBack } from '../../lending.js';
import { chainIds, type Fetched } from '../types.js';

export type ImageStore = 'graphdriver' | 'containerd';

export interface Endpoint {
  socketPath?: string;
  host?: string;
  port?: number;
  display: string;
}

export function parseDockerHost(value: string | undefined): Endpoint {
  const v = value && value !== '' ? value : 'unix:///var/run/docker.sock';
  if (v.startsWith('unix://')) return { socketPath: v.slice('unix://'.length), display: v };
  const m = /^(?:tcp|http):\/\/([^:/]+)(?::(\d+))?\/?$/.exec(v);
  if (m) return { host: m[1]!, port: Number(m[2] ?? 2375), display: v };
  throw new TarportError('USAGE', `DOCKER_HOST=${v}: use unix:///path/to/docker.sock or tcp://host:port`);
}

/**
 * What `GET /images/{name}/json` answers, as far as tarport reads it. `Manifests` comes only from
 * the containerd image store and only when asked with `manifests=1` (Engine API 1.48, Docker 28.0+).
 */
export interface ImageInspect {
  Id: string;
  RepoTags?: string[];
  /** The platform of the image's config (classic store; Podman's compatible API too). */
  Os?: string;
  Architecture?: string;
  Variant?: string;
  RootFS?: { Layers?: string[] };
  Manifests?: {
    ID: string;
    Available: boolean;
    Kind: 'image' | 'attestation' | 'unknown';
    ImageData?: { Platform?: { os?: string; architecture?: string; variant?: string }; Size?: { Unpacked?: number } };
  }[];
}

/** `GET /version`, as far as tarport reads it. */
export interface EngineVersion {
  Os?: string;
  Arch?: string;
  ApiVersion?: string;
  Version?: string;
}

/** What the Docker runtime needs of an Engine API (Docker, or Podman's compatible one; a fake in tests). */
export interface DockerApi {
  readonly endpoint: string;
  imageStore(signal?: AbortSignal): Promise<ImageStore>;
  version(signal?: AbortSignal): Promise<EngineVersion>;
  layerChainIds(signal?: AbortSignal): Promise<Set<string>>;
  inspectImage(ref: string, signal?: AbortSignal, opts?: { manifests?: boolean }): Promise<ImageInspect | undefined>;
  load(archive: Readable, signal?: AbortSignal, fetched?: Fetched): Promise<string[]>;
  /** `platform` (os/arch[/variant]): the platform the image is made for; the daemon's own when absent. */
  import(rootfs: Readable, repo: string, tag: string, signal?: AbortSignal, platform?: string): Promise<string>;
  /** Resolves false when there is no such image. */
  removeImage(ref: string, signal?: AbortSignal): Promise<boolean>;
}

/**
 * A daemon connection that neither sends nor takes a byte for this long is given up on: a stuck
 * daemon must not hold an unattended pull for ever. While a load streams, the daemon reads the
 * archive as it comes, and its answer follows soon after the last byte; ten minutes is far beyond
 * what a working daemon is silent for (as containerd's import tail in containerd/ctr.ts).
 */
export const DAEMON_IDLE_MS = 600_000;

/**
 * Ends `req` with `fault` once its socket has been idle (nothing read, nothing written) for `idleMs`,
 * unless `progress` (a count of work done elsewhere for this request, e.g. bytes the daemon pulled
 * from tarport's loopback registry) moved meanwhile, and then after each further idle `idleMs` in
 * which it did not move. On the socket, not the request: a ClientRequest passes its socket's
 * 'timeout' on once only (Node's listenSocketTimeout), so a bound re-armed through
 * `req.setTimeout` after progress never fired again, and the call waited without a bound.
 */
export function idleBound(req: ClientRequest, idleMs: number, fault: () => TarportError, progress?: () => number): void {
  let last = progress?.();
  let answer: IncomingMessage | undefined;
  req.once('response', (res: IncomingMessage) => (answer = res));
  req.once('socket', (socket: Socket) => {
    const onIdle = () => {
      const now = progress?.();
      if (now !== last) {
        last = now;
        socket.setTimeout(idleMs);
        return;
      }
      const f = fault();
      // once the answer has begun, its reader hears the fault from the answer's stream
      answer?.destroy(f);
      req.destroy(f);
    };
    socket.setTimeout(idleMs);
    socket.on('timeout', onIdle);
    // a kept-alive socket goes on to other requests (and the agent's own timeout) without this one's
    req.once('close', () => socket.removeListener('timeout', onIdle));
  });
}

/**
 * Whose silence a request with a body is in, for idleBound. The daemon's, once it takes no more of
 * the body (the socket's buffer is full) or the body ended and no answer came. Otherwise the body's
 * own: it waits for its next bytes (a layer still downloading), and that counts as life while the
 * download behind it moves (`fetched`). So a stuck daemon is found, a slow download is not blamed on
 * it, and a download that stopped (a repository read that hangs) still ends the wait.
 */
function bodySilence(body: Readable, req: ClientRequest, fetched?: Fetched): { moved: () => number; waitingOnBody: () => boolean } {
  let ended = false;
  body.once('end', () => (ended = true));
  const waitingOnBody = () => !ended && !req.writableNeedDrain;
  let last = fetched?.();
  let moves = 0;
  return {
    waitingOnBody,
    moved: () => {
      const now = fetched?.();
      if (waitingOnBody() && now !== last) moves++;
      last = now;
      return moves;
    },
  };
}

/** The Docker Engine API over its socket: only what tarport needs. */
export class DockerClient implements DockerApi {
  private readonly ep: Endpoint;
  private readonly idleMs: number;

  /** `label` names the service in messages (Podman's API service answers the same API). */
  constructor(
    dockerHost: string | undefined = process.env.DOCKER_HOST,
    private readonly label: { service: string; setting: string } = { service: 'Docker daemon', setting: 'DOCKER_HOST' },
    opts: { idleMs?: number } = {},
  ) {
    this.ep = parseDockerHost(dockerHost);
    this.idleMs = opts.idleMs ?? DAEMON_IDLE_MS;
  }

  get endpoint(): string {
    return this.ep.display;
  }

  private call(method: string, path: string, body?: Readable, headers: Record<string, string> = {}, signal?: AbortSignal, fetched?: Fetched): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          method,
          path,
          socketPath: this.ep.socketPath,
          host: this.ep.host ?? 'localhost',
          port: this.ep.port,
          headers: body ? { 'Content-Type': 'application/x-tar', 'Transfer-Encoding': 'chunked', ...headers } : headers,
          signal,
        },
        resolve,
      );
      let bodyError: Error | undefined;
      const silence = body ? bodySilence(body, req, fetched) : undefined;
      const fault = () => (silence?.waitingOnBody() ? bodyStalled(this.label.service, this.ep.display, method, path, this.idleMs) : stuck(this.label.service, this.ep.display, method, path, this.idleMs));
      idleBound(req, this.idleMs, fault, silence?.moved);
      req.on('error', (e) =>
        reject(
          bodyError ??
          (e instanceof TarportError ? e : undefined) ??
          new TarportError('DAEMON', `${this.label.service} at ${this.ep.display}: ${messageOf(e)}; is it running, and is ${this.label.setting} right?`, {
            cause: e,
            retryable: true,
          }),
        ),
      );
      if (body) {
        const failBody = (e: Error) => {
          bodyError = e;
          req.destroy(e);
        };
        body.on('error', failBody);
        // a body that failed before this call (a load archive whose first layer failed while the
        // request was made) keeps its fault on the stream: no 'error' comes any more to hear
        if (body.errored || body.destroyed) return failBody(body.errored ?? new TarportError('INTERNAL', `${method} ${path.split('?')[0]} to the ${this.label.service} at ${this.ep.display}: the archive to send was closed before the call`));
        // the socket is the last holder of each chunk: a decompressor's lent buffers go back once sent
        pipeGivingBack(body, req);
      } else req.end();
    });
  }

  private async json<T>(method: string, path: string, signal?: AbortSignal): Promise<T> {
    const res = await this.call(method, path, undefined, {}, signal);
    const text = await readAll(res);
    if ((res.statusCode ?? 500) >= 300) throw apiError(this.label.service, this.ep.display, method, path, res.statusCode, text);
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  async ping(signal?: AbortSignal): Promise<void> {
    await this.json('GET', '/_ping', signal).catch((e: unknown) => {
      if (e instanceof SyntaxError) return;
      throw e;
    });
  }

  /** Which image store the daemon runs: the containerd store needs complete load archives. */
  async imageStore(signal?: AbortSignal): Promise<ImageStore> {
    const info = await this.json<{ Driver?: string; DriverStatus?: [string, string][] }>('GET', '/info', signal);
    const status = info.DriverStatus ?? [];
    if (status.some(([k, v]) => k === 'driver-type' && v.includes('io.containerd.snapshotter'))) return 'containerd';
    return 'graphdriver';
  }

  /** Every image ID. */
  async imageIds(signal?: AbortSignal): Promise<string[]> {
    return (await this.json<{ Id: string }[]>('GET', '/images/json?all=1', signal)).map((i) => i.Id);
  }

  /** The chain IDs of every layer the daemon holds (each prefix of each image's layers). */
  async layerChainIds(signal?: AbortSignal): Promise<Set<string>> {
    const images = await this.json<{ Id: string }[]>('GET', '/images/json?all=1', signal);
    const out = new Set<string>();
    for (const im of images) {
      const info = await this.inspectImage(im.Id, signal);
      for (const c of chainIds(info?.RootFS?.Layers ?? [])) out.add(c);
    }
    return out;
  }

  async version(signal?: AbortSignal): Promise<EngineVersion> {
    return this.json<EngineVersion>('GET', '/version', signal);
  }

  async inspectImage(ref: string, signal?: AbortSignal, opts: { manifests?: boolean } = {}): Promise<ImageInspect | undefined> {
    // daemons before API 1.48 ignore the manifests parameter
    const query = opts.manifests ? '?manifests=1' : '';
    const res = await this.call('GET', `/images/${encodeURIComponent(ref)}/json${query}`, undefined, {}, signal);
    const text = await readAll(res);
    if (res.statusCode === 404) return undefined;
    if ((res.statusCode ?? 500) >= 300) throw apiError(this.label.service, this.ep.display, 'GET', `/images/${ref}/json`, res.statusCode, text);
    return JSON.parse(text) as ImageInspect;
  }

  /** `docker load` from a stream; returns what the daemon reported. Fails on any error message. */
  async load(archive: Readable, signal?: AbortSignal, fetched?: Fetched): Promise<string[]> {
    const res = await this.call('POST', '/images/load?quiet=1', archive, {}, signal, fetched);
    return progressLines(this.label.service, this.ep.display, 'load', res);
  }

  /**
   * `docker import` of a root file system tar under repo:tag; returns the new image ID. An empty
   * `tag` sends none: `repo` then carries it (`name:tag`, which the API takes too).
   */
  async import(rootfs: Readable, repo: string, tag: string, signal?: AbortSignal, platform?: string): Promise<string> {
    const q = new URLSearchParams({ fromSrc: '-', repo, ...(tag ? { tag } : {}), ...(platform ? { platform } : {}) });
    const res = await this.call('POST', `/images/create?${q}`, rootfs, {}, signal);
    const lines = await progressLines(this.label.service, this.ep.display, 'import', res);
    const id = lines.map((l) => /sha256:[0-9a-f]{64}/.exec(l)?.[0]).find(Boolean);
    if (!id) throw new TarportError('DAEMON', `import into the ${this.label.service} at ${this.ep.display} reported no image ID (${lines.join(' ')})`);
    return id;
  }

  async tag(image: string, repo: string, tag: string, signal?: AbortSignal): Promise<void> {
    const q = new URLSearchParams({ repo, tag });
    await this.json('POST', `/images/${encodeURIComponent(image)}/tag?${q}`, signal);
  }

  async removeImage(ref: string, signal?: AbortSignal): Promise<boolean> {
    const res = await this.call('DELETE', `/images/${encodeURIComponent(ref)}?noprune=0`, undefined, {}, signal);
    const text = await readAll(res);
    if (res.statusCode === 404) return false;
    if ((res.statusCode ?? 500) >= 300) throw apiError(this.label.service, this.ep.display, 'DELETE', `/images/${ref}`, res.statusCode, text);
    return true;
  }
}

/**
 * A runtime call given up on after the idle bound while it waited for bytes from the repository
 * (a download that stopped: a hung mount, a server that went silent), not for the runtime: IO, and
 * retryable, as any stalled read of the repository is.
 */
export class RepositorySilentError extends TarportError {
  constructor(message: string) {
    super('IO', message, { retryable: true });
  }
}

/** A request whose own body brought nothing for the idle bound (its download stalled): not the daemon's fault. */
export function bodyStalled(service: string, display: string, method: string, path: string, idleMs: number): RepositorySilentError {
  return new RepositorySilentError(`${method} ${path.split('?')[0]} to the ${service} at ${display}: the archive it sends got no bytes from the repository for ${durationOf(idleMs)}; given up`);
}

/** A daemon that went silent in the middle of a call: neither answered nor read for the idle bound. */
export class DaemonStuckError extends TarportError {
  constructor(message: string) {
    super('DAEMON', message, { retryable: true });
  }
}

export function stuck(service: string, display: string, method: string, path: string, idleMs: number): DaemonStuckError {
  return new DaemonStuckError(`${service} at ${display}: ${method} ${path.split('?')[0]} sent and took nothing for ${durationOf(idleMs)}; given up (is it stuck? see its log)`);
}

/** An idle bound as messages say it. */
export function durationOf(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`;
}

async function readAll(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function apiError(service: string, endpoint: string, method: string, path: string, status: number | undefined, text: string): TarportError {
  let msg = text.trim();
  try {
    msg = (JSON.parse(text) as { message?: string }).message ?? msg;
  } catch {
    /* plain text */
  }
  return new TarportError('DAEMON', `${service} at ${endpoint}: ${method} ${path} failed (${status}): ${msg}`, { retryable: (status ?? 500) >= 500 });
}

/** Reads a JSON-lines progress stream; an `error`/`errorDetail` line fails the call. */
async function progressLines(service: string, endpoint: string, op: string, res: IncomingMessage): Promise<string[]> {
  const text = await readAll(res);
  if ((res.statusCode ?? 500) >= 300) throw apiError(service, endpoint, 'POST', op, res.statusCode, text);
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let m: { stream?: string; status?: string; error?: string; errorDetail?: { message?: string } };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      out.push(line);
      continue;
    }
    if (m.error || m.errorDetail) throw new TarportError('DAEMON', `${op} into the ${service} at ${endpoint} failed: ${m.errorDetail?.message ?? m.error}`);
    const s = (m.stream ?? m.status ?? '').trim();
    if (s) out.push(s);
  }
  return out;
}
