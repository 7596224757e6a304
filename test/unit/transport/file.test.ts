// src/transport/file.ts: what a rename leaves durable (the folders whose entries it changed).
import { existsSync, readlinkSync, rmSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { FileTransport, fileSystem } from '../../../src/transport/file.js';
import { tempDir } from '../../helpers.js';

/**
 * Records the path of every file handle synced, through FileHandle's prototype (the class is not
 * exported; a handle of our own leads to it): module mocks do not reach a module another test file
 * of the same worker loaded first.
 */
async function watchSyncs(): Promise<{ synced: string[]; restore: () => void }> {
  const probe = await open(await tempDir());
  const proto = Object.getPrototypeOf(probe) as { sync: (this: { fd: number }) => Promise<void> };
  await probe.close();
  const real = proto.sync;
  const synced: string[] = [];
  proto.sync = function (this: { fd: number }) {
    synced.push(readlinkSync(`/proc/self/fd/${this.fd}`));
    return real.call(this);
  };
  return { synced, restore: () => void (proto.sync = real) };
}

let restore: (() => void) | undefined;
afterEach(() => restore?.());

describe('FileTransport.rename', () => {
  it('syncs the folder the name went into, and every folder it made for it with the parent of the first', async () => {
    const root = await tempDir();
    const t = new FileTransport(root);
    await t.write('tmp/x.part', () => Readable.from([Buffer.from('x')]));
    const w = await watchSyncs();
    restore = w.restore;
    await t.rename('tmp/x.part', 'a/b/c/x');
    expect(w.synced).toEqual([join(root, 'a/b/c'), join(root, 'a/b'), join(root, 'a'), root]);
    w.synced.length = 0;
    await t.write('tmp/y.part', () => Readable.from([Buffer.from('y')]));
    w.synced.length = 0; // the write syncs its file
    await t.rename('tmp/y.part', 'a/b/c/y'); // its folder was there already
    expect(w.synced).toEqual([join(root, 'a/b/c')]);
  });
});

describe('FileTransport folders', () => {
  it('a repository under /proc (a typo in --to): write, rename and localPath fail at once with the folder named, where a recursive mkdir spins', async () => {
    const t = new FileTransport('/proc/tarport-test/repo');
    const bounded = <T>(p: Promise<T>) => Promise.race([p.then(() => 'done', (e: unknown) => (e as Error).message), new Promise((r) => setTimeout(() => r('still running after 2 s'), 2_000))]);
    expect(await bounded(t.write('a/b', () => Readable.from([Buffer.from('x')])))).toMatch(/^create folder for a\/b in file:\/\/\/proc\/tarport-test\/repo: /);
    expect(await bounded(t.localPath('a/b', 'write'))).toMatch(/^create folder for a\/b in file:\/\/\/proc\/tarport-test\/repo: /);
    expect(await bounded(t.rename('a/b', 'c/d'))).toMatch(/^create folder for c\/d in file:\/\/\/proc\/tarport-test\/repo: /);
  });
});

describe('FileTransport.hold', () => {
  const write = (t: FileTransport, key: string) => t.write(key, () => Readable.from([Buffer.from(key)]));
  const gone = (root: string, how: string) => `in file://${root}: the repository folder ${how} when this write began (a stick unplugged, unmounted or swapped?); nothing more is written there: run again once it is back`;

  it('while held, a root swapped for another folder (a stick unmounted: its empty mount point) takes no write or rename', async () => {
    const base = await tempDir();
    const root = join(base, 'stick');
    await mkdir(root);
    const t = new FileTransport(root);
    const release = await t.hold();
    await write(t, 'blobs/a');
    await rename(root, join(base, 'unplugged'));
    await mkdir(root); // the mount point, on the host's disk
    await expect(write(t, 'blobs/b')).rejects.toMatchObject({ code: 'IO', retryable: false, message: `write blobs/b ${gone(root, 'is another folder than')}` });
    await expect(t.rename('x', 'tarport/catalog.json')).rejects.toMatchObject({ code: 'IO', message: `rename x to tarport/catalog.json ${gone(root, 'is another folder than')}` });
    await expect(t.localPath('blobs/c', 'write')).rejects.toMatchObject({ code: 'IO' });
    expect(await readdir(root)).toEqual([]);
    release();
    // a new hold (the next round of an agent, the stick plugged in again) takes the folder as it is
    const again = await t.hold();
    await write(t, 'blobs/b');
    again();
    expect(await readdir(join(root, 'blobs'))).toEqual(['b']);
  });

  it('while held, a root that is gone is not made again; a root that was not there yet (init) is held from when it is made', async () => {
    const base = await tempDir();
    const root = join(base, 'new-repo');
    const t = new FileTransport(root);
    const release = await t.hold();
    await write(t, 'tarport/format.json'); // makes the root
    await rm(root, { recursive: true });
    await expect(write(t, 'blobs/b')).rejects.toMatchObject({ code: 'IO', message: `write blobs/b ${gone(root, 'is gone since')}` });
    await expect(stat(root)).rejects.toMatchObject({ code: 'ENOENT' });
    release();
    // not held: a write makes its folders, the root among them, as before
    await write(t, 'blobs/b');
    expect(await readdir(join(root, 'blobs'))).toEqual(['b']);
  });

  it('a witness file gone from the held root (another stick at the same mount point: same device and inode) takes no write or rename; released, it is not asked', async () => {
    const base = await tempDir();
    const root = join(base, 'stick');
    await mkdir(root);
    const t = new FileTransport(root);
    const release = await t.hold();
    await write(t, 'pending/intent-1.json');
    const unwitness = t.witness(() => 'pending/intent-1.json');
    await write(t, 'blobs/a');
    await rm(join(root, 'pending', 'intent-1.json'));
    const why = `in file://${root}: the repository folder no longer holds pending/intent-1.json, which this write put there when it began (another stick mounted in its place?); nothing more is written there: run again once the stick is back`;
    await expect(write(t, 'blobs/b')).rejects.toMatchObject({ code: 'IO', retryable: false, message: `write blobs/b ${why}` });
    await expect(t.rename('blobs/a', 'blobs/c')).rejects.toMatchObject({ code: 'IO', retryable: false, message: `rename blobs/a to blobs/c ${why}` });
    expect(await readdir(join(root, 'blobs'))).toEqual(['a']);
    unwitness();
    await write(t, 'blobs/b');
    release();
    expect(await readdir(join(root, 'blobs'))).toEqual(['a', 'b']);
  });

  it('a witness released while another write looks at it (its transaction ended, then removed its file) does not fail that write', async () => {
    const root = await tempDir();
    const t = new FileTransport(root);
    const release = await t.hold();
    await write(t, 'pending/intent-1.json');
    await write(t, 'pending/intent-2.json');
    t.witness(() => 'pending/intent-1.json');
    // the second transaction ends between the look reaching its witness and the stat of it
    const unwitness2 = t.witness(() => {
      unwitness2();
      rmSync(join(root, 'pending', 'intent-2.json'));
      return 'pending/intent-2.json';
    });
    await write(t, 'blobs/a');
    expect(await readdir(join(root, 'blobs'))).toEqual(['a']);
    release();
  });

  it('holds nest: the root stays held until the last is released, and a release twice counts once', async () => {
    const base = await tempDir();
    const root = join(base, 'r');
    await mkdir(root);
    const t = new FileTransport(root);
    const [first, second] = [await t.hold(), await t.hold()];
    first();
    first();
    await rename(root, join(base, 'old'));
    await mkdir(root);
    await expect(write(t, 'f')).rejects.toMatchObject({ code: 'IO' });
    second();
    await write(t, 'f');
    expect(await readdir(root)).toEqual(['f']);
  });
});

describe('a file system whose rename does not replace a file (fusefat on libfuse 3 answers EEXIST)', () => {
  const put = (t: FileTransport, key: string, text: string) => t.write(key, () => Readable.from([Buffer.from(text)]));

  it('a rename over a file removes it first, and the transport says from then on that its renames do not replace in one step; a folder in the way stays an error', async () => {
    const root = await tempDir();
    const t = new FileTransport(root);
    const real = fileSystem.rename;
    fileSystem.rename = async (a, b) => {
      if (await stat(b).catch(() => undefined)) throw Object.assign(new Error(`EEXIST: file already exists, rename '${String(a)}' -> '${String(b)}'`), { code: 'EEXIST' });
      return real(a, b);
    };
    try {
      await put(t, 'a.tmp', 'new');
      await put(t, 'a', 'old');
      expect(t.capabilities.atomicRename).toBe(true);
      await t.rename('a.tmp', 'a');
      expect(await readFile(join(root, 'a'), 'utf8')).toBe('new');
      expect(t.capabilities.atomicRename).toBe(false);
      await mkdir(join(root, 'dir'));
      await put(t, 'b.tmp', 'x');
      await expect(t.rename('b.tmp', 'dir')).rejects.toMatchObject({ message: expect.stringContaining('rename b.tmp to dir in file://') });
      expect((await readdir(root)).sort()).toEqual(['a', 'b.tmp', 'dir']);
    } finally {
      fileSystem.rename = real;
    }
  });

  /**
   * A held transport whose intent (the witness) is renamed over by its refreshed copy on a file
   * system that refuses to replace (EEXIST); `between` runs after the intent was removed, before the
   * rename that puts the copy in its place, and says what a write of the same transaction did then.
   */
  async function replacingIntent(between: (t: FileTransport, from: string) => Promise<void>): Promise<{ root: string; t: FileTransport; wrote: unknown; renamed: unknown; done: () => void }> {
    const root = await tempDir();
    const t = new FileTransport(root);
    const release = await t.hold();
    await put(t, 'pending/intent-1.json', 'old');
    await put(t, 'pending/intent-1.json.tmp', 'new');
    const unwitness = t.witness(() => 'pending/intent-1.json');
    const real = fileSystem.rename;
    let wrote: unknown;
    fileSystem.rename = async (a, b) => {
      if (await stat(b).catch(() => undefined)) throw Object.assign(new Error(`EEXIST: file already exists, rename '${String(a)}' -> '${String(b)}'`), { code: 'EEXIST' });
      await between(t, String(a));
      wrote ??= await put(t, 'blobs/a', 'a').then(() => 'written', (e: unknown) => e);
      return real(a, b);
    };
    let renamed: unknown = 'renamed';
    try {
      await t.rename('pending/intent-1.json.tmp', 'pending/intent-1.json').catch((e: unknown) => (renamed = e));
    } finally {
      fileSystem.rename = real;
    }
    return { root, t, wrote, renamed, done: () => (unwitness(), release()) };
  }

  it('a witness this transport is replacing in two steps counts as there while it is absent (a write of the same transaction in that moment goes on)', async () => {
    const { root, t, wrote, renamed, done } = await replacingIntent(async () => undefined);
    expect([wrote, renamed]).toEqual(['written', 'renamed']);
    expect(await readFile(join(root, 'pending', 'intent-1.json'), 'utf8')).toBe('new');
    // once in place again, a missing witness is another stick's root, as before
    await rm(join(root, 'pending', 'intent-1.json'));
    await expect(put(t, 'blobs/b', 'b')).rejects.toMatchObject({ code: 'IO', message: expect.stringContaining('no longer holds pending/intent-1.json') });
    done();
  });

  it('a witness being replaced whose replacement is gone too (another stick in that moment) still stops the write', async () => {
    // neither the intent nor what was to take its place: not the folder the write began in
    const { root, wrote, renamed, done } = await replacingIntent(async (_t, from) => rm(from));
    expect(wrote).toMatchObject({ code: 'IO', message: expect.stringContaining('no longer holds pending/intent-1.json') });
    expect(renamed).toMatchObject({ message: expect.stringContaining('rename pending/intent-1.json.tmp to pending/intent-1.json in file://') });
    expect(existsSync(join(root, 'blobs', 'a'))).toBe(false);
    done();
  });
});
