import { request, type IncomingMessage } from 'node:http';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { TarportError, messageOf } from '../errors.js';

export type ImageStore = 'graphdriver' | 'containerd';

interface Endpoint {
  socketPath?: string;
  host?: string;
  port?: number;
  display: string;
}

function parseDockerHost(value: string | undefined): Endpoint {
  const v = value && value !== '' ? value : 'unix:///var/run/docker.sock';
  if (v.startsWith('unix://')) return { socketPath: v.slice('unix://'.length), display: v };
  const m = /^(?:tcp|http):\/\/([^:/]+)(?::(\d+))?\/?$/.exec(v);
  if (m) return { host: m[1]!, port: Number(m[2] ?? 2375), display: v };
  throw new TarportError('USAGE', `DOCKER_HOST=${v}: use unix:///path/to/docker.sock or tcp://host:port`);
}

/** The chain ID of each prefix of a list of diff IDs (OCI image spec). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? d : 'sha256:' + createHash('sha256').update(`${prev} ${d}`).digest('hex'));
  }
  return out;
}

/** What the consumer needs of a daemon (a fake implements it in tests). */
export interface DockerApi {
  readonly endpoint: string;
  imageStore(signal?: AbortSignal): Promise<ImageStore>;
  layerChainIds(signal?: AbortSignal): Promise<Set<string>>;
  inspectImage(ref: string, signal?: AbortSignal): Promise<{ Id: string; RepoTags?: string[]; RootFS?: { Layers?: string[] } } | undefined>;
  load(archive: Readable, signal?: AbortSignal): Promise<string[]>;
  import(rootfs: Readable, repo: string, tag: string, signal?: AbortSignal): Promise<string>;
  removeImage(ref: string, signal?: AbortSignal): Promise<void>;
}

/** The Docker Engine API over its socket: only what tarport needs. */
export class DockerClient implements DockerApi {
  private readonly ep: Endpoint;

  constructor(dockerHost: string | undefined = process.env.DOCKER_HOST) {
    this.ep = parseDockerHost(dockerHost);
  }

  get endpoint(): string {
    return this.ep.display;
  }

  private call(method: string, path: string, body?: Readable, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<IncomingMessage> {
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
      req.on('error', (e) =>
        reject(
          bodyError ??
          new TarportError('DAEMON', `Docker daemon at ${this.ep.display}: ${messageOf(e)}; is it running, and is DOCKER_HOST right?`, {
            cause: e,
            retryable: true,
          }),
        ),
      );
      if (body) {
        body.on('error', (e) => {
          bodyError = e;
          req.destroy(e);
        });
        body.pipe(req);
      } else req.end();
    });
  }

  private async json<T>(method: string, path: string, signal?: AbortSignal): Promise<T> {
    const res = await this.call(method, path, undefined, {}, signal);
    const text = await readAll(res);
    if ((res.statusCode ?? 500) >= 300) throw apiError(this.ep.display, method, path, res.statusCode, text);
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

  async inspectImage(ref: string, signal?: AbortSignal): Promise<{ Id: string; RepoTags?: string[]; RootFS?: { Layers?: string[] } } | undefined> {
    const res = await this.call('GET', `/images/${encodeURIComponent(ref)}/json`, undefined, {}, signal);
    const text = await readAll(res);
    if (res.statusCode === 404) return undefined;
    if ((res.statusCode ?? 500) >= 300) throw apiError(this.ep.display, 'GET', `/images/${ref}/json`, res.statusCode, text);
    return JSON.parse(text) as { Id: string; RepoTags?: string[]; RootFS?: { Layers?: string[] } };
  }

  /** `docker load` from a stream; returns what the daemon reported. Fails on any error message. */
  async load(archive: Readable, signal?: AbortSignal): Promise<string[]> {
    const res = await this.call('POST', '/images/load?quiet=1', archive, {}, signal);
    return progressLines(this.ep.display, 'load', res);
  }

  /** `docker import` of a root file system tar under repo:tag; returns the new image ID. */
  async import(rootfs: Readable, repo: string, tag: string, signal?: AbortSignal): Promise<string> {
    const q = new URLSearchParams({ fromSrc: '-', repo, tag });
    const res = await this.call('POST', `/images/create?${q}`, rootfs, {}, signal);
    const lines = await progressLines(this.ep.display, 'import', res);
    const id = lines.map((l) => /sha256:[0-9a-f]{64}/.exec(l)?.[0]).find(Boolean);
    if (!id) throw new TarportError('DAEMON', `docker import into ${this.ep.display} reported no image ID (${lines.join(' ')})`);
    return id;
  }

  async tag(image: string, repo: string, tag: string, signal?: AbortSignal): Promise<void> {
    const q = new URLSearchParams({ repo, tag });
    await this.json('POST', `/images/${encodeURIComponent(image)}/tag?${q}`, signal);
  }

  async removeImage(ref: string, signal?: AbortSignal): Promise<void> {
    await this.json('DELETE', `/images/${encodeURIComponent(ref)}?noprune=0`, signal);
  }
}

async function readAll(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function apiError(endpoint: string, method: string, path: string, status: number | undefined, text: string): TarportError {
  let msg = text.trim();
  try {
    msg = (JSON.parse(text) as { message?: string }).message ?? msg;
  } catch {
    /* plain text */
  }
  return new TarportError('DAEMON', `Docker daemon at ${endpoint}: ${method} ${path} failed (${status}): ${msg}`, { retryable: (status ?? 500) >= 500 });
}

/** Reads a JSON-lines progress stream; an `error`/`errorDetail` line fails the call. */
async function progressLines(endpoint: string, op: string, res: IncomingMessage): Promise<string[]> {
  const text = await readAll(res);
  if ((res.statusCode ?? 500) >= 300) throw apiError(endpoint, 'POST', op, res.statusCode, text);
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
    if (m.error || m.errorDetail) throw new TarportError('DAEMON', `docker ${op} into ${endpoint} failed: ${m.errorDetail?.message ?? m.error}`);
    const s = (m.stream ?? m.status ?? '').trim();
    if (s) out.push(s);
  }
  return out;
}
