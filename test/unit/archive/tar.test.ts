import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it, vi } from 'vitest';
import { compress as zstdCompress } from 'zstd-napi';
import { TarArchive, readArchiveContent, writeDemoArchives, writeLoadArchive } from '../../../src/archive/index.js';
import { CodecError, ZstdCompress, decompressor } from '../../../src/archive/compression.js';
import { PassThrough, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { encodeFileHeader, normalizeName, padding } from '../../../src/archive/tarheader.js';
import { TarportError } from '../../../src/errors.js';
import { sha256 } from '../../../src/crypto/index.js';
import { dockerSave, tarBytes } from '../../corpus/tarwriter.js';
import { SMALL, tempDir } from '../../helpers.js';

/** A decompressing stream of `z`. */
async function pipelineOut(z: Buffer): Promise<NodeJS.ReadableStream> {
  const d = decompressor('zstd');
  d.end(z);
  return d;
}

function tarOf(files: [string, Buffer][], trailer = true): Buffer {
  const parts: Buffer[] = [];
  for (const [n, d] of files) parts.push(encodeFileHeader(n, d.length), d, padding(d.length));
  if (trailer) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('TarArchive', () => {
  const files: [string, Buffer][] = [
    ['a.txt', Buffer.from('alpha')],
    ['dir/b.bin', Buffer.alloc(3000, 7)],
    ['c.json', Buffer.from('{"x":1}')],
  ];

  it.each([
    ['plain', (b: Buffer) => b],
    ['gzip', (b: Buffer) => gzipSync(b)],
    ['zstd', (b: Buffer) => zstdCompress(b)],
  ])('indexes and reads a %s archive', async (kind, wrap) => {
    const dir = await tempDir();
    const p = join(dir, `x.tar`);
    await writeFile(p, wrap(tarOf(files)));
    const t = await TarArchive.open(p);
    expect(t.compression).toBe(kind === 'plain' ? 'none' : kind);
    expect([...t.order]).toEqual(files.map((f) => f[0]));
    expect((await t.readEntry('c.json')).toString()).toBe('{"x":1}');
    const seen: string[] = [];
    for await (const { entry, stream } of t.streamEntries(['dir/b.bin', 'a.txt'])) {
      seen.push(entry.name);
      const data = await collect(stream);
      expect(sha256(data)).toBe(sha256(files.find((f) => f[0] === entry.name)![1]));
    }
    expect(seen).toEqual(['a.txt', 'dir/b.bin']); // archive order
  });

  it.each([
    ['an empty file', Buffer.alloc(0), /empty file/],
    ['random bytes', Buffer.from('this is not a tar archive at all, just text'.repeat(40)), /not a tar archive/],
    ['a tar cut inside an entry', tarOf(files).subarray(0, 1200), /truncated/],
    ['a tar cut at an entry boundary', tarOf(files, false), /truncated/],
    ['a gzip stream cut short', gzipSync(tarOf(files)).subarray(0, 60), /truncated|not a readable/],
    ['a zstd stream cut short', zstdCompress(tarOf(files)).subarray(0, 40), /truncated|not a readable/],
    ['gzip of something that is not a tar', gzipSync(Buffer.from('hello'.repeat(300))), /not a (readable|tar)/],
  ])('refuses %s, naming the file', async (_what, bytes, msg) => {
    const dir = await tempDir();
    const p = join(dir, 'bad.tar');
    await writeFile(p, bytes);
    const err = await TarArchive.open(p).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    expect(err?.message).toMatch(msg);
    expect(err?.message).toContain(p);
    expect(err?.code).toBe('BAD_INPUT');
  });
});

describe('TarArchive: archives of other compression tools', () => {
  const files: [string, Buffer][] = [['a.txt', Buffer.from('alpha')], ['b.bin', randomBytes(70_000)]];

  it('reads zstd that opens with a skippable frame, as pzstd writes it', async () => {
    const p = join(await tempDir(), 'x.tar.zst');
    const skippable = Buffer.alloc(12);
    skippable.writeUInt32LE(0x184d2a50, 0);
    skippable.writeUInt32LE(4, 4);
    await writeFile(p, Buffer.concat([skippable, zstdCompress(tarOf(files))]));
    const t = await TarArchive.open(p);
    expect(t.compression).toBe('zstd');
    expect(sha256(await t.readEntry('b.bin', 1 << 20))).toBe(sha256(files[1]![1]));
  });

  it.each([
    ['xz', ['xz', '-c'], 'xz -d', 'an'],
    ['bzip2', ['bzip2', '-c'], 'bzip2 -d', 'a'],
    ['lz4', ['lz4', '-c'], 'lz4 -d', 'an'],
  ])('refuses %s, naming the compression and what undoes it (not "not a tar archive")', async (name, argv, undo, article) => {
    const dir = await tempDir();
    const p = join(dir, `x.tar.${name}`);
    const plain = join(dir, 'x.tar');
    await writeFile(plain, tarOf(files));
    await writeFile(p, execFileSync(argv[0]!, [...argv.slice(1), plain]));
    await expect(TarArchive.open(p)).rejects.toMatchObject({
      code: 'BAD_INPUT',
      message: `${p}: ${article} ${name}-compressed archive; tarport reads plain, gzip and zstd archives: decompress it first (${undo}), or compress it with gzip or zstd`,
    });
  });

  it('reads a plain tar whose first file is named like a magic number', async () => {
    const p = join(await tempDir(), 'x.tar');
    await writeFile(p, tarOf([['BZh91AY', Buffer.from('x')]]));
    expect([...(await TarArchive.open(p)).order]).toEqual(['BZh91AY']);
  });
});

describe('an archive path that is a pipe', () => {
  it('a FIFO (push <(docker save ...)) is refused at once, pointing at push -, not read as a file', async () => {
    const { execFileSync } = await import('node:child_process');
    const fifo = join(await tempDir(), 'save.fifo');
    execFileSync('mkfifo', [fifo]);
    await expect(TarArchive.open(fifo)).rejects.toMatchObject({ code: 'BAD_INPUT', message: `${fifo}: a pipe or device, not a file; pipe an archive into 'tarport push -' (docker save IMAGE | tarport push - --to URL)` });
  });
});

describe('zstd codec faults are named by their class, not their wording', () => {
  it.each([
    ['cut inside a frame', zstdCompress(tarBytes([{ name: 'a', data: Buffer.alloc(200_000, 3) }])).subarray(0, 60), true, 'truncated zstd archive (zstd: truncated'],
    ['zstd magic, then bytes that are not zstd', Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(4096, 0xff)]), false, 'not a readable zstd archive (zstd: not valid zstd data'],
  ])('a stream %s: the codec error (CodecError) gets the file named once, in front', async (_what, bytes, truncated, says) => {
    const dir = await tempDir();
    const p = join(dir, 'bad.tar.zst');
    await writeFile(p, bytes);
    const err = await TarArchive.open(p).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TarportError);
    const e = err as TarportError;
    expect(e.code).toBe('BAD_INPUT');
    expect(e.cause).toBeInstanceOf(CodecError);
    expect(e.truncated).toBe(truncated);
    expect(e.message.startsWith(`${p}: ${says}`)).toBe(true);
    expect(e.message.split(p).length).toBe(2); // the path once
  });
});

describe('load archive writer', () => {
  it('writes a docker-save layout that reads back, manifest last, partial layers allowed', async () => {
    const layer = tarOf([['hello.txt', Buffer.from('hi')]]);
    const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [sha256(layer), sha256(layer)] } }));
    const stream = writeLoadArchive({
      configDigest: sha256(config),
      config,
      repoTags: ['x/y:1'],
      layerPaths: ['aaa/layer.tar', 'bbb/layer.tar'],
      files: [{ name: 'bbb/layer.tar', size: layer.length, open: async () => (await import('node:stream')).Readable.from([layer]) }],
    });
    const dir = await tempDir();
    const p = join(dir, 'load.tar');
    await writeFile(p, await collect(stream));
    const t = await TarArchive.open(p);
    expect(t.order.at(-1)).toBe('manifest.json');
    expect(t.entries.has('aaa/layer.tar')).toBe(false);
    expect(sha256(await t.readEntry('bbb/layer.tar'))).toBe(sha256(layer));
    const manifest = JSON.parse((await t.readEntry('manifest.json')).toString());
    expect(manifest[0].RepoTags).toEqual(['x/y:1']);
  });

  it('fails the stream when a layer yields fewer bytes than declared', async () => {
    const config = Buffer.from('{}');
    const stream = writeLoadArchive({
      configDigest: sha256(config),
      config,
      repoTags: [],
      layerPaths: ['a/layer.tar'],
      files: [{ name: 'a/layer.tar', size: 100, open: async () => (await import('node:stream')).Readable.from([Buffer.alloc(10)]) }],
    });
    await expect(collect(stream)).rejects.toThrow(/10 bytes, expected 100/);
  });
});

describe('archive content', () => {
  it('reads the images of a docker save archive from metadata only', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const t = await TarArchive.open(v1!);
    const c = await readArchiveContent(t);
    expect(c.kind).toBe('images');
    if (c.kind !== 'images') return;
    expect(c.images).toHaveLength(1);
    expect(c.images[0]!.repoTags).toEqual(['tarport-demo/hello:latest']);
    expect(c.images[0]!.layers).toHaveLength(2);
  });

  it('takes a tar without manifest.json for a root file system', async () => {
    const dir = await tempDir();
    const p = join(dir, 'rootfs.tar');
    await writeFile(p, tarOf([['etc/hostname', Buffer.from('x')]]));
    expect((await readArchiveContent(await TarArchive.open(p))).kind).toBe('rootfs');
  });
});

describe('the one tar decoder: what a root file system may hold and an image archive may not', () => {
  const rootfs = () =>
    tarBytes([
      { name: 'etc/', type: '5' },
      { name: 'etc/hostname', data: Buffer.from('box\n') },
      { name: 'dev/null', type: '3' },
      { name: 'lib', type: '2', linkname: 'usr/lib' },
      { name: 'etc/hostname', data: Buffer.from('box, again\n') },
    ]);

  it.each([
    ['plain', (b: Buffer) => b],
    ['gzip', (b: Buffer) => gzipSync(b)],
  ])('a %s root file system with a device, a symlink and a name written twice is a rootfs (imported whole)', async (_k, wrap) => {
    const dir = await tempDir();
    const p = join(dir, 'rootfs.tar');
    await writeFile(p, wrap(rootfs()));
    const t = await TarArchive.open(p);
    expect(t.shape.unusual).toEqual({ name: 'dev/null', what: 'a device' });
    expect(t.shape.duplicate).toBe('etc/hostname');
    expect((await readArchiveContent(t)).kind).toBe('rootfs');
  });

  it.each([
    ['l1//layer.tar', 'l1/layer.tar'],
    ['l1/./layer.tar', 'l1/layer.tar'],
    ['./a//b/./c/', 'a/b/c'],
    ['/a/b/', 'a/b'],
    ['a/.hidden/..x', 'a/.hidden/..x'],
    ['.', ''],
    ['a/b.tar', 'a/b.tar'],
  ])('names an entry %j as %j: one name for every spelling of a path', (raw, name) => {
    expect(normalizeName(raw)).toBe(name);
  });

  it.each(['//', '/./', '/.//./'])("refuses an image archive with a layer entry named again with '%s' in place of '/' (docker load keeps the last one)", async (sep) => {
    const s = dockerSave();
    const [dir, file] = s.layerPaths[0]!.split('/');
    const items = s.items.flatMap((i) => (i.name === s.layerPaths[0] ? [i, { name: `${dir}${sep}${file}`, data: tarBytes([{ name: 'other.txt', data: Buffer.from('not the layer\n') }]) }] : [i]));
    const p = join(await tempDir(), 'twice.tar');
    await writeFile(p, tarBytes(items));
    const t = await TarArchive.open(p);
    expect(t.shape.duplicate).toBe(s.layerPaths[0]);
    await expect(readArchiveContent(t)).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringContaining(`two entries are named "${s.layerPaths[0]}"`) });
  });

  it('refuses an entry beneath a symbolic link in any archive, naming both', async () => {
    const dir = await tempDir();
    const p = join(dir, 'x.tar');
    await writeFile(p, tarBytes([{ name: 'lib', type: '2', linkname: '/etc' }, { name: 'lib/cron.d/x', data: Buffer.from('* * * * * root sh\n') }]));
    await expect(TarArchive.open(p)).rejects.toThrow(/entry "lib\/cron\.d\/x" lies beneath the symbolic link "lib"/);
  });

  it('reads entries of a compressed archive by their offsets in one pass, in archive order', async () => {
    const dir = await tempDir();
    const p = join(dir, 'x.tar.zst');
    const big = Buffer.alloc(3 << 20, 9);
    await writeFile(p, zstdCompress(tarBytes([{ name: 'a', data: Buffer.from('A') }, { name: 'deep/er/than/three/big', data: big }, { name: 'empty', data: Buffer.alloc(0) }, { name: 'z', data: Buffer.from('Z') }])));
    const t = await TarArchive.open(p);
    const got: [string, string][] = [];
    for await (const { entry, stream } of t.streamEntries(['z', 'deep/er/than/three/big', 'empty'])) got.push([entry.name, sha256(await collect(stream))]);
    expect(got).toEqual([
      ['deep/er/than/three/big', sha256(big)],
      ['empty', sha256(Buffer.alloc(0))],
      ['z', sha256(Buffer.from('Z'))],
    ]);
  });
});

describe('TarArchive: a compressed archive whose second pass fails', () => {
  it('fails the entry being read and hands out none after it, and no entry stream throws its error unheard', async () => {
    const dir = await tempDir();
    const p = join(dir, 'x.tar.gz');
    const entries = ['one', 'two', 'three', 'four'].map((name) => ({ name, data: randomBytes(1 << 20) }));
    const whole = gzipSync(tarBytes(entries));
    await writeFile(p, whole);
    const t = await TarArchive.open(p);
    // the file changes between the index and the pass that cuts it (a watched folder): cut inside 'two'
    await writeFile(p, whole.subarray(0, Math.floor(whole.length * 0.4)));
    // an entry stream not yet handed out has no reader: an 'error' emitted on it would be thrown
    const emit = vi.spyOn(PassThrough.prototype, 'emit');
    try {
      const read: string[] = [];
      const err = await (async () => {
        for await (const { entry, stream } of t.streamEntries(entries.map((e) => e.name))) {
          await collect(stream);
          read.push(entry.name);
        }
      })().catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 50));
      expect(err).toBeInstanceOf(TarportError);
      expect((err as TarportError).message).toContain(p);
      expect(read).toEqual(['one']);
      expect(emit.mock.calls.filter(([ev]) => ev === 'error').length).toBeGreaterThan(1);
      expect(emit.mock.results.filter((r) => r.type === 'throw')).toEqual([]);
    } finally {
      emit.mockRestore();
    }
  });
});

describe('TarArchive over reused buffers', () => {
  it('entries of many MiB of a plain archive, read as a push reads them (into a compressor that gives its input back), are intact', async () => {
    const dir = await tempDir();
    const big = [randomBytes(3 << 20), Buffer.alloc(2 << 20, 'layer '), randomBytes(1 << 20)];
    const tarFiles: [string, Buffer][] = [['one', Buffer.concat(big)], ['two', Buffer.concat(big.reverse())], ['small', Buffer.from('x')]];
    const p = join(dir, 'plain.tar');
    await writeFile(p, tarOf(tarFiles));
    const t = await TarArchive.open(p);
    for await (const { entry, stream } of t.streamEntries(tarFiles.map(([n]) => n))) {
      // as publish does: pass-throughs, then the compressor, which gives each read buffer back once
      // taken in; the reader before it copies every chunk as it sees it and checks it at the end
      const seen: { buf: Buffer; copy: Buffer }[] = [];
      // a slow hashing stage: chunks wait in the streams' buffers meanwhile
      const spy = new Transform({
        highWaterMark: 1 << 20,
        transform: (c: Buffer, _e, cb) => (seen.push({ buf: c, copy: Buffer.from(c) }), setTimeout(() => cb(null, c), 2)),
      });
      const out: Buffer[] = [];
      await pipeline(stream, spy, new ZstdCompress(2), new Writable({ write: (c: Buffer, _e, cb) => (out.push(Buffer.from(c)), cb()) }));
      const want = tarFiles.find(([n]) => n === entry.name)![1];
      expect(Buffer.concat(seen.map((x) => x.copy)).equals(want), entry.name).toBe(true);
      const back = await collect((await pipelineOut(Buffer.concat(out))));
      expect(back.equals(want), entry.name).toBe(true);
      if (want.length > 1 << 20) expect(new Set(seen.map((x) => x.buf)).size, entry.name).toBeLessThan(seen.length);
    }
  });

  it('a zstd archive of many MiB is indexed and cut with its kept entries and its streams intact', async () => {
    // ~6 MiB of random entries of uneven sizes: headers and kept entries straddle the 1 MiB read
    // buffers and decompressed buffers that the index hands back for reuse
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    const files: [string, Buffer][] = Array.from({ length: 60 }, (_, i) => [`d/f${i}.bin`, randomBytes(next() % 200_000)]);
    const dir = await tempDir();
    const p = join(dir, 'many.tar.zst');
    await writeFile(p, zstdCompress(tarOf(files)));
    const a = await TarArchive.open(p);
    for (const [n, d] of files) expect((await a.readEntry(n, 1 << 20)).equals(d)).toBe(true);
    const names = files.filter((_, i) => i % 3 === 0).map(([n]) => n);
    const got = new Map<string, Buffer>();
    for await (const { entry, stream } of a.streamEntries(names)) got.set(entry.name, await collect(stream));
    expect([...got.keys()]).toEqual(names);
    for (const [n, d] of files.filter(([x]) => names.includes(x))) expect(got.get(n)!.equals(d)).toBe(true);
  });
});
