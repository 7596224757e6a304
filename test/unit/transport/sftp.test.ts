import { EventEmitter, once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SFTPWrapper } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { PipelinedWriter, SftpTransport, WRITE_DEPTH } from '../../../src/transport/sftp.js';
import { parseLocation } from '../../../src/transport/location.js';

/** An SFTP session that answers each write after a tick, writing into `file`, and counts writes unanswered. */
function fakeSession(fail?: { atRequest: number }) {
  const file = Buffer.alloc(8 << 20);
  const stats = { inFlight: 0, maxInFlight: 0, requests: 0, written: 0 };
  const sftp = Object.assign(new EventEmitter(), {
    write(_h: Buffer, buf: Buffer, off: number, len: number, pos: number, cb: (err?: Error) => void) {
      const n = ++stats.requests;
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
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
