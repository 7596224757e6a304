import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it, onTestFinished } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { stageBlob } from '../../../src/repo/objects.js';
import { GrowingFile } from '../../../src/repo/spool.js';
import { Store } from '../../../src/repo/store.js';
import { FileTransport } from '../../../src/transport/file.js';
import { MemoryTransport } from '../../../src/transport/memory.js';
import { tempDir } from '../../helpers.js';
import type { Source, WriteOptions } from '../../../src/transport/types.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A remote-like store (not local: stageBlob spools); `seen` is how many bytes the upload had read when the source was still open. */
class RemoteMemory extends MemoryTransport {
  constructor() {
    super();
    // a memory store that says it is not on this host, as SFTP and FTP say
    Object.assign(this, { capabilities: { ...this.capabilities, local: false } });
  }
  failUpload = false;
  readWhileOpen = 0;
  sourceOpen = true;
  override async write(key: string, source: Source, opts?: WriteOptions): Promise<{ size: number }> {
    if (this.failUpload) throw new TarportError('CONNECTION', `upload ${key}: the connection was lost`, { retryable: false });
    const s = (source as () => Readable)();
    const chunks: Buffer[] = [];
    for await (const c of s) {
      if (this.sourceOpen) this.readWhileOpen += (c as Buffer).length;
      chunks.push(c as Buffer);
    }
    return super.write(key, () => Readable.from([Buffer.concat(chunks)]), opts);
  }
}

describe('GrowingFile', () => {
  it('a reader opened before the first byte gets every byte, each part as soon as it is written, and ends with the writer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tp-spool-'));
    try {
      const g = await GrowingFile.create(join(dir, 'f'));
      const r = g.reader();
      const w = g.writer();
      const parts = [randomBytes(3000), randomBytes(1 << 20), randomBytes(5)];
      const got: Buffer[] = [];
      const reading = (async () => {
        for await (const c of r) got.push(c as Buffer);
      })();
      for (const p of parts) {
        await new Promise<void>((res, rej) => w.write(p, (e) => (e ? rej(e) : res())));
        while (Buffer.concat(got).length < parts.slice(0, parts.indexOf(p) + 1).reduce((n, x) => n + x.length, 0)) await new Promise((res) => setTimeout(res, 2));
      }
      w.end();
      await reading;
      expect(Buffer.concat(got).equals(Buffer.concat(parts))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a writer that fails fails its readers with its error', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tp-spool-'));
    try {
      const g = await GrowingFile.create(join(dir, 'f'));
      const r = g.reader();
      const w = g.writer();
      w.on('error', () => undefined); // the pipeline that feeds a spool hears it; here nobody else does
      w.write(randomBytes(100));
      setTimeout(() => w.destroy(new Error('the layer broke off')), 20);
      await expect((async () => {
        for await (const _ of r) void _;
      })()).rejects.toThrow('the layer broke off');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The disk fills after the first write: every later write through a file handle fails with ENOSPC
 * (through FileHandle's prototype: the class is not exported; a handle of our own leads to it).
 */
async function diskFullAfterFirstWrite(): Promise<void> {
  const probe = await open(await tempDir());
  const proto = Object.getPrototypeOf(probe) as { write: (...a: unknown[]) => Promise<unknown> };
  await probe.close();
  const real = proto.write;
  let calls = 0;
  proto.write = function (this: unknown, ...a: unknown[]) {
    if (++calls > 1) return Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' }));
    return real.apply(this, a);
  };
  onTestFinished(() => void (proto.write = real));
}

describe('stageBlob on a remote store', () => {
  it('uploads while the source is still being read, and stages the blob under its digest', async () => {
    const t = new RemoteMemory();
    const data = randomBytes(3 << 20);
    const src = new PassThrough();
    const staging = stageBlob(new Store(t), src);
    src.write(data.subarray(0, 2 << 20));
    // the upload takes the first part before the source ends
    while (t.readWhileOpen === 0) await new Promise((r) => setTimeout(r, 2));
    t.sourceOpen = false;
    src.end(data.subarray(2 << 20));
    const b = await staging;
    expect(b).toMatchObject({ digest: sha(data), size: data.length, uploaded: true });
    await b.commit();
    expect(t.files.get(`blobs/sha256/${sha(data).slice(7)}`)?.equals(data)).toBe(true);
    expect([...t.files.keys()].filter((k) => k.endsWith('.tmp'))).toEqual([]);
  });

  it('a spool whose disk fills (TMPDIR) is named as such (IO), not as the layer\'s fault', async () => {
    const t = new RemoteMemory();
    await diskFullAfterFirstWrite();
    const src = Readable.from((function* () {
      for (let i = 0; i < 16; i++) yield randomBytes(1 << 20);
    })());
    const e = await stageBlob(new Store(t), src).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'IO', message: expect.stringMatching(/^spool of a blob in .*tarport-spool-.* \(TMPDIR\): no space left on device; free space, then run again$/) });
  });

  it("a source that fails is the error, and what was uploaded of it is removed", async () => {
    const t = new RemoteMemory();
    const src = new PassThrough();
    const staging = stageBlob(new Store(t), src);
    src.write(randomBytes(1 << 20));
    // the source fails once the upload is under way (and the spool's pipeline is listening to it)
    while (t.readWhileOpen === 0) await new Promise((r) => setTimeout(r, 2));
    src.destroy(new Error('unexpected end of the layer'));
    await expect(staging).rejects.toThrow('unexpected end of the layer');
    expect([...t.files.keys()]).toEqual([]);
  });

  it("an upload that fails is the error (not the read it cut short), and nothing stays", async () => {
    const t = new RemoteMemory();
    t.failUpload = true;
    const src = Readable.from([randomBytes(1 << 20), randomBytes(1 << 20)]);
    const e = await stageBlob(new Store(t), src).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TarportError);
    expect((e as TarportError).code).toBe('CONNECTION');
    expect([...t.files.keys()]).toEqual([]);
  });

  it('a blob the store holds already is not kept twice', async () => {
    const t = new RemoteMemory();
    const data = randomBytes(100_000);
    const first = await stageBlob(new Store(t), Readable.from([data]));
    await first.commit();
    const again = await stageBlob(new Store(t), Readable.from([data]));
    expect(again.uploaded).toBe(false);
    expect([...t.files.keys()]).toEqual([`blobs/sha256/${sha(data).slice(7)}`]);
  });
});

describe('stageBlob on a local store', () => {
  it('a write that fails before it reads the blob is the error: the source, more than its buffers hold, is not left waiting', async () => {
    const t = new MemoryTransport();
    expect(t.capabilities.local).toBe(true);
    const refused = new TarportError('IO', 'blobs/sha256/x: permission denied', { retryable: false });
    Object.assign(t, { write: async () => Promise.reject(refused) });
    const src = Readable.from((function* () {
      for (let i = 0; i < 16; i++) yield randomBytes(1 << 20);
    })());
    const got = await Promise.race([stageBlob(new Store(t), src).then(() => 'staged', (e: unknown) => e), new Promise((r) => setTimeout(() => r('still waiting after 5 s'), 5_000))]);
    expect(got).toBe(refused);
  });

  it('a directory repository whose disk fills midway names the full disk (IO), not the feed it cut short (Premature close)', async () => {
    const t = new FileTransport(await tempDir());
    await diskFullAfterFirstWrite();
    const src = Readable.from((function* () {
      for (let i = 0; i < 16; i++) yield randomBytes(1 << 20);
    })());
    expect(await stageBlob(new Store(t), src).catch((e: unknown) => e)).toMatchObject({ code: 'IO', message: expect.stringContaining('no space left on device; free space, then run again') });
  });

  it('a layer that fails while a directory repository opens its file is the error, not a wait for ever', async () => {
    const t = new FileTransport(await tempDir());
    const bad = new TarportError('BAD_INPUT', 'app.tar: layer 3: corrupted zstd block', { retryable: false });
    // fails on its first read, long before the transport's checks and open are done
    const src = new Readable({ read() { this.destroy(bad); } });
    const got = await Promise.race([stageBlob(new Store(t), src).then(() => 'staged', (e: unknown) => e), new Promise((r) => setTimeout(() => r('still waiting after 5 s'), 5_000))]);
    expect(got).toBe(bad);
    expect(await readdir(join(t.root, 'blobs', 'sha256')).catch(() => [])).toEqual([]);
  });
});
