import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { FtpTransport } from '../../../src/transport/ftp.js';
import { ListingTooLargeError } from '../../../src/transport/ftpdata.js';
import { parseLocation } from '../../../src/transport/location.js';
import type { ObjectInfo } from '../../../src/transport/types.js';
import { startLyingFtp } from '../../corpus/lyingftp.js';
import { tempDir } from '../../helpers.js';

// Folder listings come through a data connection of the transport's own, capped (an endless LIST
// from a lying server stops at the cap, exit 3), and are parsed by basic-ftp.

async function all(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const e of it) out.push(e);
  return out;
}

/** A transport to a test server on loopback (`ftps` for explicit TLS), user t, password t. */
function ftpAt(port: number, opts: { retries: number; timeoutMs: number }, scheme: 'ftp' | 'ftps' = 'ftp'): FtpTransport {
  return new FtpTransport(parseLocation(`${scheme}://t@127.0.0.1:${port}/`) as ConstructorParameters<typeof FtpTransport>[0], { password: 't', ...opts });
}

describe('FTP folder listings', () => {
  let root: string;
  beforeAll(async () => {
    root = await tempDir('tarport-ftp-list-');
    await mkdir(join(root, 'blobs/sha256'), { recursive: true });
    await writeFile(join(root, 'blobs/sha256/aaaa'), 'hello');
    await writeFile(join(root, 'catalog.json'), '{}');
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  const transport = (port: number) => ftpAt(port, { retries: 2, timeoutMs: 5000 });

  it('an honest listing is read whole: names, folders and sizes', async () => {
    const server = await startLyingFtp(root);
    const t = transport(server.port);
    try {
      const top = await all(t.list(''));
      expect(top.map((e) => [e.name, e.isDir]).sort()).toEqual([['blobs', true], ['catalog.json', false]]);
      expect(await all(t.list('blobs/sha256'))).toMatchObject([{ name: 'aaaa', isDir: false, size: 5 }]);
      expect(await all(t.list('no-such-folder'))).toEqual([]);
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('an endless listing is refused at the cap as a lying server (INTEGRITY, not retried), naming the folder and the server', async () => {
    const server = await startLyingFtp(root, { endlessList: ['/blobs/sha256'] });
    const t = transport(server.port);
    try {
      const e = await all(t.list('blobs/sha256')).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(ListingTooLargeError);
      expect((e as TarportError).code).toBe('INTEGRITY');
      expect((e as TarportError).retryable).toBe(false);
      expect((e as Error).message).toContain('list blobs/sha256 on ftp://t@127.0.0.1:');
      // one capped read (32 MiB), not one per retry, and never the whole endless stream
      expect(server.sent()).toBeLessThan(40 << 20);
      expect(server.sent()).toBeGreaterThan(1 << 20);
    } finally {
      await t.close();
      await server.close();
    }
  });
});

describe('FTP stat', () => {
  it('a missing file is missing (550); a server that refuses SIZE itself (502) is an error naming it, not a missing file', async () => {
    const root = await tempDir('tarport-ftp-stat-');
    await writeFile(join(root, 'catalog.json'), '{}');
    const honest = await startLyingFtp(root);
    const refusing = await startLyingFtp(root, { sizeReply: '502 SIZE not implemented' });
    try {
      const at = (port: number) => ftpAt(port, { retries: 0, timeoutMs: 5000 });
      const a = at(honest.port);
      expect(await a.stat('catalog.json')).toMatchObject({ name: 'catalog.json', size: 2 });
      expect(await a.stat('no-such.json')).toBeUndefined();
      await a.close();
      const b = at(refusing.port);
      await expect(b.stat('catalog.json')).rejects.toMatchObject({ code: 'IO', retryable: false, message: `stat catalog.json on ftp://t@127.0.0.1:${refusing.port}/: 502 SIZE not implemented` });
      await b.close();
    } finally {
      await honest.close();
      await refusing.close();
    }
  });
});

describe('FTP connection pool', () => {
  it('a pooled connection the server dropped while idle is not used again: the next request logs in anew and needs no retry', async () => {
    const root = await tempDir('tarport-ftp-pool-');
    await writeFile(join(root, 'catalog.json'), '{}');
    const server = await startLyingFtp(root);
    try {
      const t = ftpAt(server.port, { retries: 0, timeoutMs: 5000 });
      expect(await t.stat('catalog.json')).toMatchObject({ size: 2 });
      await server.dropConnections();
      await new Promise((r) => setTimeout(r, 50));
      expect(await t.stat('catalog.json')).toMatchObject({ size: 2 });
      expect(server.logins()).toBe(2);
      await t.close();
    } finally {
      await server.close();
    }
  });
});

describe('FTP close()', () => {
  let root: string;
  beforeAll(async () => {
    root = await tempDir('tarport-ftp-close-');
    await writeFile(join(root, 'stall.json'), 'x'.repeat(1 << 20));
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('ends a request still in flight on a silent server at once, retries nothing, and refuses what comes after', async () => {
    const server = await startLyingFtp(root, { stalledRetr: ['/stall.json'] });
    // a timeout and retries far longer than the test: only close() can end the read in time
    const t = ftpAt(server.port, { retries: 5, timeoutMs: 60_000 });
    try {
      const reading = t.readTo('stall.json', () => undefined).then(
        () => 'read to the end',
        (e: unknown) => e,
      );
      await vi.waitFor(() => expect(server.sent()).toBeGreaterThan(0), { timeout: 10_000 });
      const logins = server.logins();
      await t.close();
      const outcome = await Promise.race([reading, new Promise((r) => setTimeout(() => r('still running 5 s after close()'), 5000))]);
      expect(outcome).toBeInstanceOf(TarportError);
      expect((outcome as TarportError).code).toBe('ABORTED');
      expect((outcome as TarportError).retryable).toBe(false);
      const after = await t.stat('stall.json').then(
        () => 'answered',
        (e: unknown) => e,
      );
      expect((after as TarportError).code).toBe('ABORTED');
      // no connection was opened again to retry the read or to serve the request after close()
      await new Promise((r) => setTimeout(r, 300));
      expect(server.logins()).toBe(logins);
    } finally {
      await server.close();
    }
  });
});

/** A server that greets, answers AUTH TLS with 234, then sends nothing: the client's TLS hello is never answered. */
async function silentAfterAuthTls() {
  const { createServer } = await import('node:net');
  const sockets = new Set<import('node:net').Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => undefined);
    sock.write('220 welcome\r\n');
    sock.on('data', (d: Buffer) => {
      if (d.toString().startsWith('AUTH TLS')) sock.write('234 go ahead\r\n');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as import('node:net').AddressInfo).port,
    stop: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** How `p` ended, or that it had not within `ms`. */
const outcomeWithin = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => 'answered', (e: unknown) => e), new Promise((r) => setTimeout(() => r(`no answer after ${ms} ms`), ms))]);

describe('FTPS login', () => {
  it('a server that goes silent in the TLS handshake after AUTH TLS is given up on within the login\'s bound (basic-ftp leaves the handshake unbounded)', async () => {
    const srv = await silentAfterAuthTls();
    try {
      const t = ftpAt(srv.port, { retries: 0, timeoutMs: 300 }, 'ftps');
      const t0 = Date.now();
      const got = await outcomeWithin(t.stat('catalog.json'), 5_000);
      expect(got).toMatchObject({ code: 'CONNECTION', message: `connect on ftps://t@127.0.0.1:${srv.port}/: the login did not finish within 1 s (the server went silent during it)` });
      expect(Date.now() - t0).toBeLessThan(3_000);
      await t.close();
    } finally {
      srv.stop();
    }
  });

  it('close() during such a login ends it at once, not at the login\'s bound', async () => {
    const srv = await silentAfterAuthTls();
    try {
      // a bound of 30 s: only close() can end the login within the test's wait
      const t = ftpAt(srv.port, { retries: 0, timeoutMs: 10_000 }, 'ftps');
      const asked = outcomeWithin(t.stat('catalog.json'), 5_000);
      await new Promise((r) => setTimeout(r, 300));
      await t.close();
      expect(await asked).toMatchObject({ code: 'ABORTED', retryable: false, message: `ftps://t@127.0.0.1:${srv.port}/: the transport was closed by its owner; the request was given up` });
    } finally {
      srv.stop();
    }
  });
});
