import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { DaemonStuckError, DockerClient } from '../../../../src/runtime/docker/client.js';
import { LibpodClient } from '../../../../src/runtime/podman/libpod.js';
import { tempDir } from '../../../helpers.js';

// A daemon that goes silent in the middle of a call is given up on after the idle bound (here 300
// ms; DAEMON_IDLE_MS in use), however far the call got; work the daemon does elsewhere for the call
// (Podman pulling from tarport's loopback registry) counts as life.

const IDLE = 300;
let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r) ?? r(undefined));
  server = undefined;
});

async function daemon(answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const sock = join(await tempDir(), 'd.sock');
  server = createServer(answer);
  await new Promise<void>((r) => server!.listen(sock, r));
  return `unix://${sock}`;
}

describe('a load archive that failed before the call', () => {
  it('fails the load at once with its own fault (the fault stays on the stream; no error event comes to hear)', async () => {
    let requests = 0;
    const host = await daemon((req, res) => {
      requests++;
      req.resume().on('end', () => res.end('{}'));
    });
    const fault = new Error('object sha256:12 in memory://test: digest mismatch');
    const archive = new Readable({ read() {} }).on('error', () => undefined);
    archive.destroy(fault);
    await new Promise((r) => setImmediate(r));
    const t0 = Date.now();
    const err = await new DockerClient(host, undefined, { idleMs: 5_000 }).load(archive).catch((e: unknown) => e);
    expect(err).toBe(fault);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(requests).toBe(0);
  });
});

describe('a silent daemon', () => {
  it('that never answers a query: DaemonStuckError naming the call and the bound', async () => {
    const host = await daemon(() => undefined);
    const t0 = Date.now();
    const err = await new DockerClient(host, undefined, { idleMs: IDLE }).version().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DaemonStuckError);
    expect((err as Error).message).toBe(`Docker daemon at ${host}: GET /version sent and took nothing for 300 ms; given up (is it stuck? see its log)`);
    expect(Date.now() - t0).toBeLessThan(IDLE * 20);
  });

  it('that stops in the middle of its answer', async () => {
    const host = await daemon((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"Version": ');
    });
    const err = await new DockerClient(host, undefined, { idleMs: IDLE }).version().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DaemonStuckError);
  });

  it('that takes a load archive whole and then never answers', async () => {
    let took = 0;
    const host = await daemon((req) => req.on('data', (c: Buffer) => (took += c.length)));
    const archive = Readable.from([Buffer.alloc(1 << 20), Buffer.alloc(1 << 20)]);
    const err = await new DockerClient(host, { service: 'Podman API service', setting: '--podman-socket' }, { idleMs: IDLE }).load(archive).catch((e: unknown) => e);
    expect(took).toBe(2 << 20);
    expect((err as Error).message).toContain('Podman API service at unix://');
    expect((err as Error).message).toContain('POST /images/load sent and took nothing');
  });

  /** A load archive that sends 1 KiB, waits four idle bounds for its next bytes, then sends 1 KiB more. */
  async function* slowly(idle = IDLE) {
    yield Buffer.alloc(1 << 10);
    await new Promise((r) => setTimeout(r, idle * 4));
    yield Buffer.alloc(1 << 10);
  }

  it('a load archive waiting for its own bytes longer than the bound is not the daemon\'s silence while the download behind it moves', async () => {
    let took = 0;
    const host = await daemon((req, res) => {
      req.on('data', (c: Buffer) => (took += c.length));
      req.on('end', () => res.end('{"stream":"Loaded image: x:1\\n"}\n'));
    });
    let downloaded = 0;
    // a success: a bound of a second, that a busy machine's pause before the daemon's answer is read
    // does not reach (the failures keep the short one)
    const idle = 1_000;
    const ticking = setInterval(() => (downloaded += 1000), idle / 3);
    try {
      const lines = await new DockerClient(host, undefined, { idleMs: idle }).load(Readable.from(slowly(idle)), undefined, () => downloaded);
      expect(took).toBe(2 << 10);
      expect(lines).toEqual(['Loaded image: x:1']);
    } finally {
      clearInterval(ticking);
    }
  });

  it('a load archive whose download stopped is given up after the bound as the repository\'s silence, not the daemon\'s', async () => {
    const host = await daemon((req, res) => req.on('end', () => res.end('{"stream":"Loaded image: x:1\\n"}\n')));
    const err = await new DockerClient(host, undefined, { idleMs: IDLE }).load(Readable.from(slowly()), undefined, () => 0).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(DaemonStuckError);
    expect(err).toMatchObject({ code: 'IO', retryable: true });
    expect((err as Error).message).toContain('POST /images/load to the Docker daemon at unix://');
    expect((err as Error).message).toContain('got no bytes from the repository for 300 ms');
  });

  it('a daemon that stops reading a load archive its source still has bytes for is given up on', async () => {
    let took = 0;
    const host = await daemon((req) => {
      req.once('data', (c: Buffer) => {
        took += c.length;
        req.pause();
      });
    });
    // 256 MiB offered, 1 MiB at a time: far more than the socket's buffers hold
    let offered = 0;
    const archive = new Readable({
      read() {
        offered += 1 << 20;
        this.push(offered > 256 << 20 ? null : Buffer.alloc(1 << 20));
      },
    });
    const t0 = Date.now();
    const err = await new DockerClient(host, undefined, { idleMs: IDLE }).load(archive).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DaemonStuckError);
    expect((err as Error).message).toContain('POST /images/load sent and took nothing for 300 ms');
    expect(took).toBeGreaterThan(0);
    expect(offered).toBeLessThan(256 << 20);
    expect(Date.now() - t0).toBeLessThan(IDLE * 20);
  });

  it('a libpod pull whose progress moved and then stopped is given up one bound after it stopped (the bound is armed again)', async () => {
    const host = await daemon(() => undefined);
    let moved = 0;
    const ticking = setInterval(() => moved++, IDLE / 3);
    setTimeout(() => clearInterval(ticking), IDLE * 3.5);
    const t0 = Date.now();
    const err = await new LibpodClient(host, { idleMs: IDLE }).pull('127.0.0.1:1/x:load', undefined, () => moved).catch((e: unknown) => e);
    clearInterval(ticking);
    expect(err).toBeInstanceOf(DaemonStuckError);
    expect((err as Error).message).toContain('POST /v4.0.0/libpod/images/pull sent and took nothing for 300 ms');
    // it lived while the progress moved (3.5 bounds), and ended after that (within two bounds on a
    // quiet machine; the upper bound leaves room for a loaded one)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(IDLE * 3.5);
    expect(Date.now() - t0).toBeLessThan(IDLE * 20);
  }, 10_000);

  it('a load archive whose download moved and then stopped is given up as the repository\'s silence', async () => {
    const host = await daemon(() => undefined);
    let downloaded = 0;
    const ticking = setInterval(() => (downloaded += 1000), IDLE / 3);
    setTimeout(() => clearInterval(ticking), IDLE * 3.5);
    // 1 KiB, then nothing more: the download behind it stops after three bounds
    const archive = new Readable({ read() {} });
    archive.push(Buffer.alloc(1 << 10));
    const t0 = Date.now();
    const err = await new DockerClient(host, undefined, { idleMs: IDLE }).load(archive, undefined, () => downloaded).catch((e: unknown) => e);
    clearInterval(ticking);
    expect(err).toMatchObject({ code: 'IO', retryable: true });
    expect((err as Error).message).toContain('got no bytes from the repository for 300 ms');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(IDLE * 3.5);
    expect(Date.now() - t0).toBeLessThan(IDLE * 20);
  }, 10_000);

  it('a libpod pull silent on its socket lives while its progress moves, and is given up once that stops', async () => {
    // the success under a bound of a second (a busy machine's pause must not read as silence), the
    // failure under the short one
    const idle = 1_000;
    const host = await daemon((_req, res) => setTimeout(() => res.end('{"id":"0123"}\n'), idle * 4));
    let moved = 0;
    const ticking = setInterval(() => moved++, idle / 3);
    try {
      expect(await new LibpodClient(host, { idleMs: idle }).pull('127.0.0.1:1/x:load', undefined, () => moved)).toBe('sha256:0123');
    } finally {
      clearInterval(ticking);
    }
    const err = await new LibpodClient(host, { idleMs: IDLE }).pull('127.0.0.1:1/x:load', undefined, () => moved).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DaemonStuckError);
    expect((err as Error).message).toContain('Podman API service at unix://');
  });
});
