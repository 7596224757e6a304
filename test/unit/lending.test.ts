import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { Lender, giveBack, givingBack, pipeGivingBack } from '../../src/lending.js';

const dir = mkdtempSync(join(tmpdir(), 'tarport-lending-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Writes `n` chunks of `size` bytes, the i-th filled with byte i, each from the lender (a given-back
 * buffer or a fresh one), the way a codec fills its output: a buffer given back too early is
 * refilled with the next chunk's byte while the writer still holds it.
 */
async function produce(lender: Lender, w: Writable, n: number): Promise<Set<Buffer>> {
  const used = new Set<Buffer>();
  for (let i = 0; i < n; i++) {
    const b = lender.take().fill(i);
    used.add(b);
    if (!w.write(lender.lend(b))) await new Promise((r) => w.once('drain', r));
  }
  await new Promise<void>((res, rej) => w.end((e?: Error | null) => (e ? rej(e) : res())));
  return used;
}

/** A writer that holds each chunk a while and checks, when it calls back, that it still holds its byte. */
function slowWriter(delayMs: number) {
  const got: number[] = [];
  const changed: number[] = [];
  const w = new Writable({
    // several chunks wait in the writer's buffer while one is being written
    highWaterMark: 512,
    write(c: Buffer, _e, cb) {
      const first = c[0]!;
      got.push(first);
      setTimeout(() => {
        if (!c.every((x) => x === first)) changed.push(got.length - 1);
        cb();
      }, delayMs);
    },
  });
  return { w, got, changed };
}

describe('Lender', () => {
  it('reuses a buffer only once it is given back, whole, and keeps at most `keep`', () => {
    const l = new Lender(16, 1);
    const a = l.lend(l.take());
    const b = l.lend(l.take());
    expect(a).not.toBe(b);
    expect(l.take()).not.toBe(a); // not given back yet
    giveBack(a.subarray(1)); // a piece of it is not taken back
    giveBack(Buffer.alloc(16)); // nor a buffer never lent
    expect(l.take()).not.toBe(a);
    giveBack(a);
    giveBack(b); // beyond `keep`: dropped
    giveBack(a); // twice: ignored
    expect(l.take()).toBe(a);
    expect(l.take()).not.toBe(b);
  });
});

describe('givingBack', () => {
  it('gives a chunk back only after its write has called back: a writer that holds chunks sees none change', async () => {
    const lender = new Lender(64, 8);
    const { w, got, changed } = slowWriter(3);
    const used = await produce(lender, givingBack(w), 40);
    expect(changed).toEqual([]);
    expect(got).toEqual(Array.from({ length: 40 }, (_, i) => i));
    // reused: the chunks the writer buffers (512 / 64) and the lender keeps (8) carried all 40
    expect(used.size).toBeLessThanOrEqual(20);
  });

  it('a writer that is not giving back gets fresh buffers only', async () => {
    const lender = new Lender(64, 8);
    const { w, changed } = slowWriter(1);
    const used = await produce(lender, w, 20);
    expect(changed).toEqual([]);
    expect(used.size).toBe(20);
  });

  it('a file written through givingBack holds every chunk as written (writev included), from few buffers', async () => {
    const lender = new Lender(4096, 8);
    const file = join(dir, 'out');
    const used = await produce(lender, givingBack(createWriteStream(file, { highWaterMark: 16 << 10 })), 200);
    const bytes = readFileSync(file);
    expect(bytes.length).toBe(200 * 4096);
    for (let i = 0; i < 200; i++) expect(bytes.subarray(i * 4096, (i + 1) * 4096).every((x) => x === (i & 0xff)), `chunk ${i}`).toBe(true);
    expect(used.size).toBeLessThan(50);
  });

  it('a chunk whose write failed is not given back', async () => {
    const lender = new Lender(8, 4);
    const w = givingBack(new Writable({ write: (_c, _e, cb) => cb(new Error('disk full')) }));
    w.on('error', () => undefined);
    const b = lender.lend(lender.take());
    await new Promise<void>((r) => w.write(b, () => r()));
    expect(lender.take()).not.toBe(b);
  });
});

describe('pipeGivingBack', () => {
  /** A source of `n` lent chunks, the i-th filled with byte i when it is read (so a chunk given back early is refilled). */
  function lentSource(lender: Lender, n: number, used: Set<Buffer>): Readable {
    let i = 0;
    return new Readable({
      highWaterMark: 1,
      read() {
        if (i === n) return void this.push(null);
        const b = lender.take().fill(i++);
        used.add(b);
        this.push(lender.lend(b));
      },
    });
  }

  it('gives each chunk back only after the destination wrote it, with back-pressure', async () => {
    const lender = new Lender(64, 8);
    const used = new Set<Buffer>();
    const { w, got, changed } = slowWriter(2);
    const finished = new Promise((r) => w.on('finish', r));
    pipeGivingBack(lentSource(lender, 40, used), w);
    await finished;
    expect(changed).toEqual([]);
    expect(got).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(used.size).toBeLessThanOrEqual(20);
  });

  // (Node copies a chunked body's pieces as it writes them to the socket, so this path would not
  // show a buffer given back early: the writer above does)
  it('an HTTP request body (chunked, over a socket whose reader starts late) arrives intact from reused buffers', async () => {
    const received: Buffer[] = [];
    // the server starts reading late: the socket's buffers fill and writes wait in the request's
    const server = createServer((req, res) => {
      req.pause();
      setTimeout(() => {
        req.on('data', (c: Buffer) => received.push(c));
        req.on('end', () => res.end('ok'));
        req.resume();
      }, 300);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const lender = new Lender(16 << 10, 8);
      const used = new Set<Buffer>();
      const n = 400;
      await new Promise<void>((resolve, reject) => {
        const req = request({ method: 'POST', host: '127.0.0.1', port: (server.address() as AddressInfo).port, headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', reject);
        pipeGivingBack(lentSource(lender, n, used), req);
      });
      const body = Buffer.concat(received);
      expect(body.length).toBe(n * (16 << 10));
      for (let i = 0; i < n; i++) expect(body.subarray(i * (16 << 10), (i + 1) * (16 << 10)).every((x) => x === (i & 0xff)), `chunk ${i}`).toBe(true);
      expect(used.size).toBeLessThan(n);
    } finally {
      server.close();
    }
  });
});
