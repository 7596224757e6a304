import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it, vi } from 'vitest';
import { ObjectCache, type Download } from '../../../src/consumer/cache.js';
import { TarportError } from '../../../src/errors.js';
import { Repository, blobKey } from '../../../src/repo/index.js';
import { MemoryTransport, type ByteSink, type ReadOptions } from '../../../src/transport/index.js';
import { tempDir } from '../../helpers.js';

const hex = (d: string) => d.slice('sha256:'.length);
const descOf = (b: Buffer) => ({ digest: `sha256:${createHash('sha256').update(b).digest('hex')}`, size: b.length });

/** A memory store whose reads break off (a cut connection) after `cutAfter` bytes, once. */
class CutOnce extends MemoryTransport {
  cutAfter: number | undefined;
  readonly offsets: number[] = [];

  override async readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    this.offsets.push(opts.offset ?? 0);
    const cut = this.cutAfter;
    if (cut === undefined) return super.readTo(key, sink, opts);
    this.cutAfter = undefined;
    let sent = 0;
    await super
      .readTo(
        key,
        async (c) => {
          const room = cut - sent;
          if (room <= 0) throw new TarportError('CONNECTION', 'connection lost (test)');
          const part = c.subarray(0, room);
          sent += part.length;
          await sink(part);
          if (part.length < c.length) throw new TarportError('CONNECTION', 'connection lost (test)');
        },
        opts,
      );
    return sent;
  }
}

/**
 * A memory store whose read stops twice, each time until the test lets it go on: after the first
 * `first` bytes, and after the last byte, before the read returns (the cache checks the digest only
 * then). `paused` settles at each stop.
 */
class Paced extends CutOnce {
  first = 100_000;
  private go: (() => void)[] = [];
  private stopped: (() => void)[] = [];

  /** Settles once the read stopped for the `n`th time (1 or 2). */
  paused(n: 1 | 2): Promise<void> {
    return new Promise((resolve) => (this.stopped[n] = resolve));
  }

  /** Lets the read go on from its `n`th stop. */
  resume(n: 1 | 2): void {
    this.go[n]?.();
  }

  private stop(n: 1 | 2): Promise<void> {
    return new Promise((resolve) => {
      this.go[n] = resolve;
      this.stopped[n]?.();
    });
  }

  override async readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    const all: Buffer[] = [];
    await super.readTo(key, async (c) => void all.push(Buffer.from(c)), opts);
    const body = Buffer.concat(all);
    await sink(body.subarray(0, this.first));
    await this.stop(1);
    await sink(body.subarray(this.first));
    await this.stop(2);
    return body.length;
  }
}

/** Reads a followed download, recording what arrived and whether (and how) it ended. */
function reader(d: Download) {
  const got: Buffer[] = [];
  const r = { got, bytes: () => Buffer.concat(got), ended: false, fault: undefined as unknown };
  const s = d.stream();
  s.on('data', (c: Buffer) => got.push(Buffer.from(c)));
  s.on('end', () => (r.ended = true));
  s.on('error', (e) => (r.fault = e));
  return r;
}

/** Lets streams and file reads run for a while. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

async function setup(data = randomBytes(300_000)) {
  const transport = new CutOnce();
  const repo = new Repository(transport);
  const desc = descOf(data);
  await transport.write(blobKey(desc.digest), () => Readable.from([data]));
  const dir = await tempDir();
  return { transport, repo, desc, data, dir, cache: new ObjectCache(dir) };
}

async function errorOf(p: Promise<unknown>): Promise<TarportError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof TarportError)) throw new Error(`expected a TarportError, got ${String(e)}`);
  return e;
}

describe('ObjectCache', () => {
  it('downloads an object into blobs/ under its hex digest, once', async () => {
    const { repo, desc, data, dir, cache } = await setup();
    expect(await cache.has(desc)).toBe(false);
    expect(await cache.ensure(repo, desc)).toBe(data.length);
    expect((await readFile(join(dir, 'blobs', hex(desc.digest)))).equals(data)).toBe(true);
    expect(await readdir(join(dir, 'partial'))).toEqual([]);
    expect(await cache.has(desc)).toBe(true);
    expect(await cache.ensure(repo, desc)).toBe(0); // already there: nothing read
    const back: Buffer[] = [];
    for await (const c of cache.open(desc.digest)) back.push(c as Buffer);
    expect(Buffer.concat(back).equals(data)).toBe(true);
  });

  it('a cut download keeps its partial file, and the next attempt fetches only the rest', async () => {
    const { transport, repo, desc, data, dir, cache } = await setup();
    transport.cutAfter = 100_000;
    const cut = await errorOf(cache.ensure(repo, desc));
    expect(cut.code).toBe('CONNECTION');
    expect(cut.retryable).toBe(true);
    const part = join(dir, 'partial', hex(desc.digest));
    expect((await stat(part)).size).toBe(100_000);
    expect(await cache.has(desc)).toBe(false);
    expect(await cache.ensure(repo, desc)).toBe(data.length - 100_000);
    expect(transport.offsets).toEqual([0, 100_000]);
    expect((await readFile(join(dir, 'blobs', hex(desc.digest)))).equals(data)).toBe(true);
    await expect(stat(part)).rejects.toThrow(/ENOENT/);
  });

  it('a read that ends early without a fault (a server that says it sent all) keeps the partial file as a cut does; the next attempt fetches the rest', async () => {
    const { transport, repo, desc, data, dir, cache } = await setup();
    // the first read hands over 100 000 bytes, then returns as if that were the whole object
    const honest = transport.readTo.bind(transport);
    let short = true;
    transport.readTo = async (key, sink, opts) => {
      if (!short) return honest(key, sink, opts);
      short = false;
      let sent = 0;
      await honest(key, async (c) => {
        const part = c.subarray(0, Math.max(0, 100_000 - sent));
        sent += part.length;
        if (part.length > 0) await sink(part);
      }, opts);
      return sent;
    };
    const early = await errorOf(cache.ensure(repo, desc));
    expect(early).toMatchObject({ code: 'CONNECTION', retryable: true, message: `download ${desc.digest} from memory://test: the transfer ended after 100000 of ${data.length} bytes` });
    const part = join(dir, 'partial', hex(desc.digest));
    expect((await stat(part)).size).toBe(100_000);
    expect(await cache.ensure(repo, desc)).toBe(data.length - 100_000);
    expect((await readFile(join(dir, 'blobs', hex(desc.digest)))).equals(data)).toBe(true);
  });

  it('a partial file with wrong bytes fails the digest check and is removed; the next attempt starts afresh', async () => {
    const { transport, repo, desc, data, dir, cache } = await setup();
    const part = join(dir, 'partial', hex(desc.digest));
    await mkdir(join(dir, 'partial'), { recursive: true });
    const poisoned = Buffer.from(data.subarray(0, 50_000));
    poisoned[1234]! ^= 0x01; // one flipped bit
    await writeFile(part, poisoned);
    const e = await errorOf(cache.ensure(repo, desc));
    expect(e.code).toBe('DIGEST_MISMATCH');
    expect(e.message).toContain(desc.digest);
    await expect(stat(part)).rejects.toThrow(/ENOENT/);
    expect(await readdir(join(dir, 'blobs'))).toEqual([]);
    expect(await cache.ensure(repo, desc)).toBe(data.length);
    expect(transport.offsets).toEqual([50_000, 0]);
  });

  it('a partial file that is whole already (cut before its rename) is checked and put in place without a read', async () => {
    const { transport, repo, desc, data, dir, cache } = await setup();
    await mkdir(join(dir, 'partial'), { recursive: true });
    await writeFile(join(dir, 'partial', hex(desc.digest)), data);
    expect(await cache.ensure(repo, desc)).toBe(0);
    expect(transport.offsets).toEqual([]);
    expect((await readFile(join(dir, 'blobs', hex(desc.digest)))).equals(data)).toBe(true);
    expect(await readdir(join(dir, 'partial'))).toEqual([]);
  });

  it('a whole-sized partial file with wrong bytes fails its check, is removed, and the next attempt fetches the object', async () => {
    const { transport, repo, desc, data, dir, cache } = await setup();
    await mkdir(join(dir, 'partial'), { recursive: true });
    const bad = Buffer.from(data);
    bad[0]! ^= 0x01;
    await writeFile(join(dir, 'partial', hex(desc.digest)), bad);
    expect((await errorOf(cache.ensure(repo, desc))).code).toBe('DIGEST_MISMATCH');
    expect(await readdir(join(dir, 'partial'))).toEqual([]);
    expect(await cache.ensure(repo, desc)).toBe(data.length);
    expect(transport.offsets).toEqual([0]);
  });

  it('a partial file longer than the object is dropped and the object fetched whole', async () => {
    const { repo, desc, data, dir, cache } = await setup();
    await mkdir(join(dir, 'partial'), { recursive: true });
    await writeFile(join(dir, 'partial', hex(desc.digest)), Buffer.concat([data, Buffer.from('x')]));
    expect(await cache.ensure(repo, desc)).toBe(data.length);
    expect((await readFile(join(dir, 'blobs', hex(desc.digest)))).equals(data)).toBe(true);
  });

  it('an object the repository serves wrong (same size) never lands in blobs/', async () => {
    const { transport, repo, desc, data, dir, cache } = await setup();
    const bad = Buffer.from(data);
    bad[bad.length - 1]! ^= 0xff;
    await transport.write(blobKey(desc.digest), () => Readable.from([bad]));
    const e = await errorOf(cache.ensure(repo, desc));
    expect(e.code).toBe('DIGEST_MISMATCH');
    expect(e.message).toMatch(/digest mismatch, expected sha256:/);
    expect(await readdir(join(dir, 'blobs'))).toEqual([]);
    expect(await readdir(join(dir, 'partial'))).toEqual([]);
  });

  it('prune keeps exactly the objects named', async () => {
    const { transport, repo, desc, cache, dir } = await setup();
    const otherData = randomBytes(1000);
    const other = descOf(otherData);
    await transport.write(blobKey(other.digest), () => Readable.from([otherData]));
    await cache.ensure(repo, desc);
    await cache.ensure(repo, other);
    await cache.prune(new Set([other.digest]));
    expect(await readdir(join(dir, 'blobs'))).toEqual([hex(other.digest)]);
    expect(await new ObjectCache(join(dir, 'never-used')).prune(new Set())).toEqual([]); // nothing cached yet: no error
  });

  it('prune says what it could not remove (the cache would grow without a word)', async () => {
    const { cache, dir } = await setup();
    // an entry rm cannot take without recursion: a folder where an object would be
    const stuck = join(dir, 'blobs', 'a'.repeat(64));
    await mkdir(join(stuck, 'inside'), { recursive: true });
    const problems = await cache.prune(new Set());
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`prune the cache (${stuck})`);
  });
});

describe('Download: reading an object as the cache downloads it', () => {
  async function paced(data = randomBytes(300_000)) {
    const transport = new Paced();
    const repo = new Repository(transport);
    const desc = descOf(data);
    await transport.write(blobKey(desc.digest), () => Readable.from([data]));
    const dir = await tempDir();
    return { transport, repo, desc, data, dir, cache: new ObjectCache(dir) };
  }

  it('hands over what has arrived, holds the last byte until the object is verified and in place, then ends', async () => {
    // the reader takes whole 1 MiB reads while the download goes on (fewer, larger reads)
    const { transport, repo, desc, data, dir, cache } = await paced(randomBytes(3 << 20));
    transport.first = 2 << 20;
    const download = cache.follow(desc);
    const r = reader(download);
    const first = transport.paused(1);
    const second = transport.paused(2);
    const ensured = cache.ensure(repo, desc, undefined, download);
    await first;
    await vi.waitFor(() => expect(r.bytes().length).toBe(2 << 20), { timeout: 10_000 });
    await settle(); // and no more
    expect(r.bytes().equals(data.subarray(0, 2 << 20))).toBe(true);
    expect(r.ended).toBe(false);
    transport.resume(1);
    await second;
    // every byte written, not yet verified: all but the last, and no end
    await vi.waitFor(() => expect(r.bytes().length).toBe(data.length - 1), { timeout: 10_000 });
    await settle();
    expect(r.bytes().equals(data.subarray(0, data.length - 1))).toBe(true);
    expect(r.ended).toBe(false);
    transport.resume(2);
    expect(await ensured).toBe(data.length);
    await vi.waitFor(() => expect(r.ended).toBe(true));
    expect(r.bytes().equals(data)).toBe(true);
    expect(r.fault).toBeUndefined();
    expect(await readdir(join(dir, 'blobs'))).toEqual([hex(desc.digest)]);
  });

  it('an object served wrong fails its reader with the digest fault, and the reader never saw its last byte', async () => {
    const { transport, repo, desc, data, cache } = await paced();
    const bad = Buffer.from(data);
    bad[200_000]! ^= 0x01;
    await transport.write(blobKey(desc.digest), () => Readable.from([bad]));
    const download = cache.follow(desc);
    const r = reader(download);
    const second = transport.paused(2);
    transport.paused(1).then(() => transport.resume(1), () => undefined);
    const ensured = cache.ensure(repo, desc, undefined, download);
    await second;
    // the reader has all the download wrote but the last byte before the check fails
    await vi.waitFor(() => expect(r.bytes().length).toBe(data.length - 1), { timeout: 10_000 });
    transport.resume(2);
    const e = await errorOf(ensured);
    expect(e.code).toBe('DIGEST_MISMATCH');
    await vi.waitFor(() => expect(r.fault).toBe(e));
    expect(r.ended).toBe(false);
    expect(r.bytes().length).toBe(data.length - 1);
  });

  it('a resumed download is read from its first byte: the bytes already in the partial file, then the rest', async () => {
    const { transport, repo, desc, data, dir, cache } = await paced();
    await mkdir(join(dir, 'partial'), { recursive: true });
    await writeFile(join(dir, 'partial', hex(desc.digest)), data.subarray(0, 50_000));
    transport.paused(1).then(() => transport.resume(1), () => undefined);
    transport.paused(2).then(() => transport.resume(2), () => undefined);
    const download = cache.follow(desc);
    const r = reader(download);
    expect(await cache.ensure(repo, desc, undefined, download)).toBe(data.length - 50_000);
    expect(transport.offsets).toEqual([50_000]);
    await vi.waitFor(() => expect(r.ended).toBe(true));
    expect(r.bytes().equals(data)).toBe(true);
  });

  it('an object already in the cache is read from there', async () => {
    const { transport, repo, desc, data, cache } = await paced();
    transport.paused(1).then(() => transport.resume(1), () => undefined);
    transport.paused(2).then(() => transport.resume(2), () => undefined);
    await cache.ensure(repo, desc);
    const download = cache.follow(desc);
    const r = reader(download);
    expect(await cache.ensure(repo, desc, undefined, download)).toBe(0);
    await vi.waitFor(() => expect(r.ended).toBe(true));
    expect(r.bytes().equals(data)).toBe(true);
    expect(transport.offsets).toEqual([0]);
  });

  it('a download that never began (ended with a fault) fails its reader with that fault', async () => {
    const { desc, cache } = await paced();
    const download = cache.follow(desc);
    const r = reader(download);
    const fault = new TarportError('CONNECTION', 'an earlier layer failed (test)');
    download.end(fault);
    await vi.waitFor(() => expect(r.fault).toBe(fault));
    expect(r.got).toEqual([]);
  });

  it('a stream taken before its reader comes keeps a fault for it, and throws nothing meanwhile', async () => {
    const { desc, cache } = await paced();
    const download = cache.follow(desc);
    const s = download.stream();
    // with no listener yet, an 'error' is thrown from emit (and would end the agent)
    const emitted = vi.spyOn(s, 'emit');
    const fault = new TarportError('CONNECTION', 'an earlier layer failed (test)');
    download.end(fault);
    await vi.waitFor(() => expect(s.destroyed).toBe(true));
    await settle();
    expect(emitted.mock.calls.map(([ev]) => ev)).toContain('error');
    expect(emitted.mock.results.filter((r) => r.type === 'throw')).toEqual([]);
    await expect(pipeline(s, new PassThrough())).rejects.toBe(fault);
  });

  it('a download cut by the link fails its reader with the cut; the partial file stays for the next attempt', async () => {
    const { transport, repo, desc, dir, cache } = await setup();
    transport.cutAfter = 100_000;
    const download = cache.follow(desc);
    const r = reader(download);
    const cut = await errorOf(cache.ensure(repo, desc, undefined, download));
    expect(cut.code).toBe('CONNECTION');
    await vi.waitFor(() => expect(r.fault).toBe(cut));
    expect(r.ended).toBe(false);
    expect((await stat(join(dir, 'partial', hex(desc.digest)))).size).toBe(100_000);
  });

  it('a reader that opens once the object was renamed into place reads it from there', async () => {
    const { transport, repo, desc, data, cache } = await paced();
    const download = cache.follow(desc);
    transport.paused(1).then(() => transport.resume(1), () => undefined);
    transport.paused(2).then(() => transport.resume(2), () => undefined);
    const ensured = cache.ensure(repo, desc, undefined, download);
    await download.started;
    await ensured; // begun while partial, opened after the rename
    const r = reader(download);
    await vi.waitFor(() => expect(r.ended).toBe(true));
    expect(r.bytes().equals(data)).toBe(true);
  });
});
