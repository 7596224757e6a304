import { request, type IncomingMessage } from 'node:http';
import { TarportError, messageOf } from '../../errors.js';
import { DAEMON_IDLE_MS, RepositorySilentError, durationOf, idleBound, parseDockerHost, stuck, type Endpoint } from '../docker/client.js';

/** Podman's own (libpod) API calls tarport makes beside the Docker-compatible ones. */
export interface LibpodApi {
  /** Is the service on this machine (a unix socket), so that its 127.0.0.1 is ours? */
  readonly local: boolean;
  /**
   * Pulls `reference` over plain HTTP (a loopback registry); returns the image ID. `progress`
   * counts what the service took from the registry: the call is silent while it pulls, and is given
   * up only when neither moved for the idle bound (docker/client.ts, DAEMON_IDLE_MS). Given up
   * while `waitingForSource` holds (the registry waits for a layer's bytes), the silence is the
   * repository's (RepositorySilentError), not a stuck service's.
   */
  pull(reference: string, signal?: AbortSignal, progress?: () => number, waitingForSource?: () => boolean): Promise<string>;
  /** Gives image `id` the name repo:tag. */
  tag(id: string, repo: string, tag: string, signal?: AbortSignal): Promise<void>;
  /** Takes the name repo:tag off the image `id`. */
  untag(id: string, repo: string, tag: string, signal?: AbortSignal): Promise<void>;
}

const PREFIX = '/v4.0.0/libpod';

/** The libpod API over the service's socket. */
export class LibpodClient implements LibpodApi {
  private readonly ep: Endpoint;
  private readonly idleMs: number;

  constructor(socket: string, opts: { idleMs?: number } = {}) {
    this.ep = parseDockerHost(socket);
    this.idleMs = opts.idleMs ?? DAEMON_IDLE_MS;
  }

  get local(): boolean {
    return this.ep.socketPath !== undefined;
  }

  async pull(reference: string, signal?: AbortSignal, progress?: () => number, waitingForSource?: () => boolean): Promise<string> {
    const q = new URLSearchParams({ reference, tlsVerify: 'false', quiet: 'true', policy: 'always' });
    const path = `${PREFIX}/images/pull?${q}`;
    const silent = () => (waitingForSource?.() ? pullStarved(this.ep.display, this.idleMs) : undefined);
    const res = await this.call('POST', path, signal, progress, silent);
    const text = await readAll(res);
    if ((res.statusCode ?? 500) >= 300) throw this.failed('pull', res.statusCode, text);
    return pullResult(text);
  }

  async tag(id: string, repo: string, tag: string, signal?: AbortSignal): Promise<void> {
    await this.simple(`${PREFIX}/images/${encodeURIComponent(id)}/tag?${new URLSearchParams({ repo, tag })}`, 'tag', signal);
  }

  async untag(id: string, repo: string, tag: string, signal?: AbortSignal): Promise<void> {
    await this.simple(`${PREFIX}/images/${encodeURIComponent(id)}/untag?${new URLSearchParams({ repo, tag })}`, 'untag', signal);
  }

  private async simple(path: string, op: string, signal?: AbortSignal): Promise<void> {
    const res = await this.call('POST', path, signal);
    const text = await readAll(res);
    if ((res.statusCode ?? 500) >= 300) throw this.failed(op, res.statusCode, text);
  }

  private failed(op: string, status: number | undefined, text: string): TarportError {
    let msg = text.trim();
    try {
      msg = (JSON.parse(text) as { message?: string }).message ?? msg;
    } catch {
      /* plain text */
    }
    return new TarportError('DAEMON', `Podman API service at ${this.ep.display}: ${op} failed (${status}): ${msg}`, { retryable: (status ?? 500) >= 500 });
  }

  /** `silent`: the fault of a call given up on when it is not the service's (a stuck one's otherwise). */
  private call(method: string, path: string, signal?: AbortSignal, progress?: () => number, silent?: () => TarportError | undefined): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request({ method, path, socketPath: this.ep.socketPath, host: this.ep.host ?? 'localhost', port: this.ep.port, signal }, resolve);
      idleBound(req, this.idleMs, () => silent?.() ?? stuck('Podman API service', this.ep.display, method, path, this.idleMs), progress);
      req.on('error', (e) =>
        reject(e instanceof TarportError ? e : new TarportError('DAEMON', `Podman API service at ${this.ep.display}: ${messageOf(e)}; is it running, and is --podman-socket right?`, { cause: e, retryable: true })),
      );
      req.end();
    });
  }
}

/** A pull given up on while the loopback registry waited for a layer's bytes from the repository. */
export function pullStarved(display: string, idleMs: number): RepositorySilentError {
  return new RepositorySilentError(`Podman's pull (the API service at ${display}) from tarport's loopback registry: the layer it reads got no bytes from the repository for ${durationOf(idleMs)}; given up`);
}

/**
 * The image ID from a libpod pull's JSON lines ({"stream": …}, then {"images": […], "id": …}, or
 * {"error": …}); the pull failed when an error line came or no ID did.
 */
export function pullResult(text: string): string {
  let id: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let m: { error?: string; id?: string; images?: string[] };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      continue;
    }
    if (m.error) throw new TarportError('DAEMON', `Podman's pull failed: ${m.error.trim()}`);
    id = m.id ?? m.images?.[0] ?? id;
  }
  if (!id) throw new TarportError('DAEMON', `Podman's pull reported no image ID (${text.trim().slice(0, 200)})`);
  return id.startsWith('sha256:') ? id : `sha256:${id}`;
}

async function readAll(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
