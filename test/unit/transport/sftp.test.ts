import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SFTPWrapper } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { PipelinedWriter, SftpTransport, WRITE_DEPTH, WRITE_DEPTH_MAX, WRITE_RAMP, renameOver } from '../../../src/transport/sftp.js';
import { parseLocation } from '../../../src/transport/location.js';
import { TarportError } from '../../../src/errors.js';

/** An SFTP session that answers each write after a tick, writing into `file`, and counts writes unanswered. */
function fakeSession(fail?: { atRequest: number }) {
  const file = Buffer.alloc(16 << 20);
  // the most writes unanswered before WRITE_RAMP bytes were answered, and after
  const stats = { inFlight: 0, maxInFlight: 0, maxBeforeRamp: 0, requests: 0, written: 0 };
  const sftp = Object.assign(new EventEmitter(), {
    write(_h: Buffer, buf: Buffer, off: number, len: number, pos: number, cb: (err?: Error) => void) {
      const n = ++stats.requests;
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      if (stats.written < WRITE_RAMP) stats.maxBeforeRamp = Math.max(stats.maxBeforeRamp, stats.inFlight);
      const copy = Buffer.from(buf.subarray(off, off + len));
      setImmediate(() => {
        stats.inFlight--;
        if (fail && n === fail.atRequest) return cb(new Error('Failure'));
        copy.copy(file, pos);
        stats.written += len;
        cb();
      });
    },
  });
  return { sftp: sftp as unknown as SFTPWrapper, file, stats };
}

describe('PipelinedWriter', () => {
  it(`keeps at most ${WRITE_DEPTH} writes unanswered, also within a 1 MiB chunk, and lands every byte at its offset`, async () => {
    const { sftp, file, stats } = fakeSession();
    const data = Buffer.from(Array.from({ length: 3 * (1 << 20) + 12_345 }, (_, i) => i % 251));
    const chunks = [data.subarray(0, 1 << 20), data.subarray(1 << 20, 2 << 20), data.subarray(2 << 20)];
    await pipeline(Readable.from(chunks), new PipelinedWriter(sftp, Buffer.from('h'), 4096, () => new Error('lost')));
    expect(stats.maxInFlight).toBe(WRITE_DEPTH);
    expect(stats.inFlight).toBe(0); // finished only once every write was answered
    expect(stats.written).toBe(data.length);
    expect(file.subarray(4096, 4096 + data.length).equals(data)).toBe(true);
  });

  it(`raises the writes in flight to ${WRITE_DEPTH_MAX} once ${WRITE_RAMP >> 20} MiB were answered (a fast link with some round trip)`, async () => {
    const { sftp, file, stats } = fakeSession();
    const data = Buffer.from(Array.from({ length: WRITE_RAMP + (3 << 20) + 777 }, (_, i) => (i * 7) % 253));
    const chunks: Buffer[] = [];
    for (let i = 0; i < data.length; i += 1 << 20) chunks.push(data.subarray(i, i + (1 << 20)));
    await pipeline(Readable.from(chunks), new PipelinedWriter(sftp, Buffer.from('h'), 0, () => new Error('lost')));
    expect(stats.maxBeforeRamp).toBe(WRITE_DEPTH);
    expect(stats.maxInFlight).toBe(WRITE_DEPTH_MAX);
    expect(stats.inFlight).toBe(0);
    expect(file.subarray(0, data.length).equals(data)).toBe(true);
  });

  it('fails the upload with the server\'s error when one write is refused', async () => {
    const { sftp } = fakeSession({ atRequest: 5 });
    const data = Buffer.alloc(2 << 20, 7);
    await expect(pipeline(Readable.from([data]), new PipelinedWriter(sftp, Buffer.from('h'), 0, () => new Error('lost')))).rejects.toThrow('Failure');
  });

  it('fails with the lost-connection error when the session closes while writes are unanswered', async () => {
    const sftp = Object.assign(new EventEmitter(), { write: () => undefined }) as unknown as SFTPWrapper;
    const w = new PipelinedWriter(sftp, Buffer.from('h'), 0, () => new Error('the connection was lost'));
    const done = pipeline(Readable.from([Buffer.alloc(1 << 20)]), w);
    setImmediate(() => (sftp as unknown as EventEmitter).emit('close'));
    await expect(done).rejects.toThrow('the connection was lost');
  });
});

describe('SftpTransport.connectEarly', () => {
  it('starts the handshake at once, and close() cuts a handshake still under way instead of waiting for its timeout', async () => {
    // a server that takes the connection and never says a word (a hung sshd)
    const held: Socket[] = [];
    const server = createServer((c) => {
      held.push(c);
      c.resume(); // reads (and drops) what comes, so that the client's end is heard
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    try {
      const t = new SftpTransport(parseLocation(`sftp://u@127.0.0.1:${port}/r`) as never, { timeoutMs: 30_000, password: 'x' });
      t.connectEarly();
      while (held.length === 0) await new Promise((r) => setTimeout(r, 5)); // no request was made: the early connect dialled
      const closed = once(held[0]!, 'close');
      const t0 = Date.now();
      await t.close();
      await closed;
      expect(held.length).toBe(1);
      expect(Date.now() - t0).toBeLessThan(5_000); // far below the 30 s the handshake would wait
    } finally {
      for (const c of held) c.destroy();
      server.close();
    }
  });
});

/**
 * An SSH server of the test's own (ssh2's Server) that lets anyone in, says every file is 1 MiB,
 * and never answers a READ: a transfer hangs in flight, as on a server stuck behind a dead disk.
 */
async function stallingSftpServer(opts: { garbleStat?: boolean; endlessListing?: boolean; renameAfterMs?: number } = {}) {
  const { Server, utils } = await import('ssh2');
  // ssh2 now and then writes an ed25519 key it cannot parse back ("Malformed OpenSSH private key"): another is made
  let keys = utils.generateKeyPairSync('ed25519');
  for (let i = 0; i < 10 && utils.parseKey(keys.private) instanceof Error; i++) keys = utils.generateKeyPairSync('ed25519');
  const stats = { connections: 0, reads: 0, requests: [] as string[] };
  const clients = new Set<{ end(): unknown }>();
  const server = new Server({ hostKeys: [keys.private] }, (client) => {
    stats.connections++;
    clients.add(client);
    client.on('error', () => undefined);
    client.on('authentication', (ctx) => ctx.accept());
    client.on('ready', () =>
      client.on('session', (accept) =>
        accept().on('sftp', (acceptSftp) => {
          const sftp = acceptSftp();
          const attrs = { mode: 0o100644, size: 1 << 20, uid: 0, gid: 0, atime: 0, mtime: 0 };
          // a lying server: an SFTP packet of a type that does not exist (ssh2's client fails its channel)
          const garbled = (sftp as unknown as { _protocol: { channelData(id: number, b: Buffer): void }; outgoing: { id: number } });
          sftp.on('STAT', (id) => (opts.garbleStat ? garbled._protocol.channelData(garbled.outgoing.id, Buffer.from([0, 0, 0, 5, 250, 0, 0, 0, id])) : sftp.attrs(id, attrs)));
          sftp.on('LSTAT', (id) => sftp.attrs(id, attrs));
          sftp.on('OPEN', (id) => sftp.handle(id, Buffer.from('h')));
          sftp.on('READ', () => void stats.reads++);
          sftp.on('CLOSE', (id) => sftp.status(id, 0));
          sftp.on('MKDIR', (id) => sftp.status(id, 0));
          sftp.on('REMOVE', (id, p) => (stats.requests.push(`remove ${p}`), sftp.status(id, 0)));
          sftp.on('RENAME', (id, a, b) => (stats.requests.push(`rename ${a} ${b}`), setTimeout(() => sftp.status(id, 0), opts.renameAfterMs ?? 0)));
          // a lying server: a folder whose listing never ends, 5,000 new names a batch
          let listed = 0;
          sftp.on('OPENDIR', (id) => (opts.endlessListing ? sftp.handle(id, Buffer.from('d')) : sftp.status(id, 2)));
          sftp.on('READDIR', (id) => sftp.name(id, Array.from({ length: 5000 }, () => ({ filename: `f${listed++}`, longname: '', attrs }))));
        }),
      ),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const dir = await mkdtemp(join(tmpdir(), 'tp-sftp-'));
  const knownHosts = join(dir, 'known_hosts');
  await writeFile(knownHosts, `[127.0.0.1]:${port} ${keys.public.split(' ').slice(0, 2).join(' ')}\n`);
  return {
    port,
    knownHosts,
    stats,
    stop: async () => {
      for (const c of clients) c.end();
      server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe('SftpTransport.list', () => {
  it('a listing that never ends is refused (INTEGRITY) after a million entries, not gathered until memory runs out', async () => {
    const srv = await stallingSftpServer({ endlessListing: true });
    try {
      const t = new SftpTransport(parseLocation(`sftp://u@127.0.0.1:${srv.port}/r`) as never, { timeoutMs: 30_000, password: 'x', knownHosts: srv.knownHosts });
      const names: string[] = [];
      const got = await (async () => {
        for await (const e of t.list('blobs/sha256')) names.push(e.name);
      })().then(() => 'listed', (e: unknown) => e);
      expect(got).toMatchObject({ code: 'INTEGRITY', retryable: false, message: `sftp://u@127.0.0.1:${srv.port}/r: listing of blobs/sha256: more than 1000000 entries (a listing without end?)` });
      expect(names).toEqual([]);
      await t.close();
    } finally {
      await srv.stop();
    }
  }, 60_000);
});

describe('SftpTransport against a server whose SFTP side hangs while its SSH side answers', () => {
  it('a read the server never answers ends as a stall (CONNECTION), resumed on a new session and given up after the retries, never waited on for ever', async () => {
    const srv = await stallingSftpServer();
    try {
      // keepalives every second, each answered: the socket is never silent for the 3 s timeout (a
      // timeout of a second or so could be reached by a busy machine's pause, the server being in
      // this thread, and the fault would then be "nothing came")
      const t = new SftpTransport(parseLocation(`sftp://u@127.0.0.1:${srv.port}/r`) as never, { timeoutMs: 3_000, retries: 1, password: 'x', knownHosts: srv.knownHosts });
      const t0 = Date.now();
      const reading = pipeline(await t.read('objects/x'), new Writable({ write: (_c, _e, cb) => cb() }));
      const e = await Promise.race([reading.then(() => 'read to the end', (x: unknown) => x), new Promise((r) => setTimeout(() => r('still waiting after 40 s'), 40_000))]);
      expect(e).toBeInstanceOf(TarportError);
      expect(e).toMatchObject({ code: 'CONNECTION' });
      expect((e as Error).message).toContain("the server's SFTP subsystem answered none of");
      expect(srv.stats.connections).toBe(2); // the first session and the one retry
      expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * 3_000);
      await t.close();
    } finally {
      await srv.stop();
    }
  }, 60_000);
});

describe('renameOver', () => {
  /** An SFTP channel whose posix-rename answers `posix` (or is not offered), with the files `there`. */
  function channel(posix: { code: number } | 'not offered' | undefined, there: string[]) {
    const asked: string[] = [];
    const status = (code: number) => Object.assign(new Error(`status ${code}`), { code });
    const files = new Set(there);
    const sftp = {
      ext_openssh_rename(a: string, b: string, cb: (e?: Error) => void) {
        asked.push(`posix-rename ${a} ${b}`);
        if (posix === 'not offered') throw new Error('Server does not support this extended request');
        setImmediate(() => cb(posix ? status(posix.code) : undefined));
      },
      unlink(p: string, cb: (e?: Error) => void) {
        asked.push(`unlink ${p}`);
        files.delete(p);
        setImmediate(() => cb());
      },
      rename(a: string, b: string, cb: (e?: Error) => void) {
        asked.push(`rename ${a} ${b}`);
        setImmediate(() => cb());
      },
      stat(p: string, cb: (e?: Error) => void) {
        setImmediate(() => (files.has(p) ? cb() : cb(status(2))));
      },
    };
    return { sftp: sftp as unknown as SFTPWrapper, asked };
  }

  it('a server without posix-rename gets plain rename, the target removed first', async () => {
    const { sftp, asked } = channel('not offered', ['/a', '/b']);
    await renameOver(sftp, '/a', '/b');
    expect(asked).toEqual(['posix-rename /a /b', 'unlink /b', 'rename /a /b']);
  });

  it('without posix-rename, a rename whose source is gone and whose target is there (an earlier try whose answer was lost) is done: nothing removed', async () => {
    const { sftp, asked } = channel('not offered', ['/b']);
    await renameOver(sftp, '/a', '/b');
    expect(asked).toEqual(['posix-rename /a /b']);
  });

  it('a posix-rename whose source is gone and whose target is there (an earlier try whose answer was lost) is done, and the target stays', async () => {
    const { sftp, asked } = channel({ code: 2 }, ['/b']);
    await renameOver(sftp, '/a', '/b');
    expect(asked).toEqual(['posix-rename /a /b']);
  });

  it('any other failure is the rename\'s, and never removes the target', async () => {
    for (const [posix, there] of [[{ code: 3 }, ['/a', '/b']], [{ code: 2 }, []], [{ code: 2 }, ['/a', '/b']]] as const) {
      const { sftp, asked } = channel(posix, [...there]);
      await expect(renameOver(sftp, '/a', '/b')).rejects.toMatchObject({ code: posix.code });
      expect(asked).toEqual(['posix-rename /a /b']);
    }
  });

  it('a rename that the server takes longer than the idle timeout over (a gateway that copies) is waited for, within ten times the timeout', async () => {
    // a timeout of 3 s (the server is in this thread: a busy machine's pause must not read as
    // silence), the rename answered well past it
    const srv = await stallingSftpServer({ renameAfterMs: 5_000 });
    try {
      const t = new SftpTransport(parseLocation(`sftp://u@127.0.0.1:${srv.port}/r`) as never, { timeoutMs: 3_000, retries: 0, password: 'x', knownHosts: srv.knownHosts });
      await t.rename('x.tmp', 'x');
      expect(srv.stats.requests).toEqual(['remove /r/x', 'rename /r/x.tmp /r/x']);
      expect(srv.stats.connections).toBe(1);
      await t.close();
    } finally {
      await srv.stop();
    }
  }, 40_000);
});

describe('SftpTransport.close', () => {
  it('cuts a read still in flight at once: it ends ABORTED, and no new connection is made for it', async () => {
    const srv = await stallingSftpServer();
    try {
      const t = new SftpTransport(parseLocation(`sftp://u@127.0.0.1:${srv.port}/r`) as never, { timeoutMs: 30_000, password: 'x', knownHosts: srv.knownHosts });
      const reading = pipeline(await t.read('objects/x'), new Writable({ write: (_c, _e, cb) => cb() }));
      const outcome = reading.then(() => 'read to the end', (e: unknown) => e);
      for (const until = Date.now() + 10_000; srv.stats.reads === 0; ) {
        expect(Date.now(), 'the read reached the server').toBeLessThan(until);
        await new Promise((r) => setTimeout(r, 5));
      }
      const t0 = Date.now();
      await t.close();
      const e = await Promise.race([outcome, new Promise((r) => setTimeout(() => r('still waiting after 3 s'), 3_000))]);
      expect(e).toBeInstanceOf(TarportError);
      expect(e).toMatchObject({ code: 'ABORTED', retryable: false });
      expect(Date.now() - t0).toBeLessThan(1_500); // not even the 2 s a dead handle's close may take
      // nothing asked after close() dials again
      await expect(t.stat('objects/x')).rejects.toMatchObject({ code: 'ABORTED' });
      expect(srv.stats.connections).toBe(1);
    } finally {
      await srv.stop();
    }
  });
});

describe('SftpTransport against a server that sends a malformed SFTP packet', () => {
  it('fails the request in flight with the connection fault, and the channel\'s error is heard (never thrown out of the agent)', async () => {
    const srv = await stallingSftpServer({ garbleStat: true });
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      const t = new SftpTransport(parseLocation(`sftp://u@127.0.0.1:${srv.port}/r`) as never, { timeoutMs: 30_000, password: 'x', knownHosts: srv.knownHosts, retries: 2 });
      const got = await Promise.race([t.stat('objects/x').then(() => 'answered', (e: unknown) => e), new Promise((r) => setTimeout(() => r('no answer after 8 s'), 8_000))]);
      expect(got).toBeInstanceOf(TarportError);
      expect(got).toMatchObject({ code: 'CONNECTION', retryable: true, message: `stat objects/x on sftp://u@127.0.0.1:${srv.port}/r: the server sent a malformed SFTP packet (Unknown packet type 250)` });
      // each try had a session of its own: the broken one ended
      expect(srv.stats.connections).toBe(3);
      expect(uncaught).toEqual([]);
      await t.close();
    } finally {
      process.off('uncaughtException', onUncaught);
      await srv.stop();
    }
  });

  it('an operation of several requests (making folders) whose channel the server broke midway ends with the fault, not waiting on the dead channel', async () => {
    const srv = await stallingSftpServer({ garbleStat: true });
    try {
      const t = new SftpTransport(parseLocation(`sftp://u@127.0.0.1:${srv.port}/r`) as never, { timeoutMs: 30_000, password: 'x', knownHosts: srv.knownHosts, retries: 1 });
      // mkdirs: a STAT (answered with garbage: the channel fails), then a MKDIR asked on the closed channel
      const got = await Promise.race([t.rename('objects/a', 'objects/b').then(() => 'renamed', (e: unknown) => e), new Promise((r) => setTimeout(() => r('no answer after 8 s'), 8_000))]);
      expect(got).toMatchObject({ code: 'CONNECTION', message: `create folder for objects/b on sftp://u@127.0.0.1:${srv.port}/r: the server sent a malformed SFTP packet (Unknown packet type 250)` });
      expect(srv.stats.connections).toBe(2);
      await t.close();
    } finally {
      await srv.stop();
    }
  });
});
