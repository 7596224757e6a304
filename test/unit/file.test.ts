import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { FileTransport } from '../../src/transport/file.js';
import { tempDir } from '../helpers.js';

// The directory transport never leaves its root: no link is followed below it, no FIFO, device or
// socket is opened, and nothing behind a link reaches a message.

async function setup() {
  const base = await tempDir('tarport-file-');
  const root = join(base, 'repo');
  const outside = join(base, 'outside');
  await mkdir(join(root, 'tarport'), { recursive: true });
  await mkdir(outside);
  await writeFile(join(outside, 'secret'), 'TOP-SECRET-BYTES');
  return { root, outside, t: new FileTransport(root) };
}

describe('FileTransport stays inside the repository', () => {
  it('a folder linked out of the root: remove, write, rename, list and read refuse; nothing outside changes', async () => {
    const { root, outside, t } = await setup();
    await symlink(outside, join(root, 'blobs'));
    await expect(t.remove('blobs/secret')).rejects.toMatchObject({ code: 'INTEGRITY', message: expect.stringContaining('blobs is a symbolic link') });
    await expect(t.write('blobs/new', () => Readable.from([Buffer.from('x')]))).rejects.toMatchObject({ code: 'INTEGRITY' });
    await writeFile(join(root, 'tarport', 'tmp'), 'y');
    await expect(t.rename('tarport/tmp', 'blobs/moved')).rejects.toMatchObject({ code: 'INTEGRITY' });
    await expect(async () => {
      for await (const _ of t.list('blobs')) void _;
    }).rejects.toMatchObject({ code: 'INTEGRITY' });
    await expect(t.read('blobs/secret')).rejects.toMatchObject({ code: 'INTEGRITY' });
    await expect(t.readTo('blobs/secret', () => undefined)).rejects.toMatchObject({ code: 'INTEGRITY' });
    expect((await readdir(outside)).sort()).toEqual(['secret']);
    expect(await readFile(join(outside, 'secret'), 'utf8')).toBe('TOP-SECRET-BYTES');
  });

  it('a file linked to a host file is refused, and no byte of it is in the message', async () => {
    const { root, outside, t } = await setup();
    await symlink(join(outside, 'secret'), join(root, 'tarport', 'catalog.json'));
    const err = (await t.read('tarport/catalog.json').then(() => new Error('read a linked catalog'), (e: unknown) => e as Error));
    expect(err).toMatchObject({ code: 'INTEGRITY' });
    expect(err.message).not.toContain('SECRET');
    await expect(t.stat('tarport/catalog.json')).rejects.toMatchObject({ code: 'INTEGRITY' });
  });

  it('a FIFO as a file is refused at once, not opened (a reader would block forever)', async () => {
    const { root, t } = await setup();
    execFileSync('mkfifo', [join(root, 'tarport', 'catalog.json')]);
    const t0 = Date.now();
    await expect(t.read('tarport/catalog.json')).rejects.toMatchObject({ code: 'INTEGRITY', message: expect.stringContaining('a FIFO') });
    await expect(t.readTo('tarport/catalog.json', () => undefined)).rejects.toMatchObject({ code: 'INTEGRITY' });
    expect(Date.now() - t0).toBeLessThan(5000);
    const names: string[] = [];
    for await (const e of t.list('tarport')) names.push(e.name);
    expect(names).toEqual([]); // listings show plain files and folders only
  });

  it('localPath (sync copies between local stores through it) is checked like every other access', async () => {
    const { root, outside, t } = await setup();
    await symlink(outside, join(root, 'blobs'));
    await expect(t.localPath('blobs/secret', 'read')).rejects.toMatchObject({ code: 'INTEGRITY', message: expect.stringContaining('blobs is a symbolic link') });
    await expect(t.localPath('blobs/sha256/.tarport-x.tmp', 'write')).rejects.toMatchObject({ code: 'INTEGRITY' });
    expect((await readdir(outside)).sort()).toEqual(['secret']); // no folder made behind the link
    execFileSync('mkfifo', [join(root, 'tarport', 'fifo')]);
    await expect(t.localPath('tarport/fifo', 'read')).rejects.toMatchObject({ code: 'INTEGRITY', message: expect.stringContaining('a FIFO') });
    // a plain path: for 'write' its folders are made
    expect(await t.localPath('objects/sha256/.tarport-y.tmp', 'write')).toBe(join(root, 'objects', 'sha256', '.tarport-y.tmp'));
    expect(await readdir(join(root, 'objects'))).toEqual(['sha256']);
  });

  it('plain files and folders work as before', async () => {
    const { t } = await setup();
    await t.write('a/b/c', () => Readable.from([Buffer.from('hello')]));
    await t.rename('a/b/c', 'a/d');
    expect((await t.stat('a/d'))?.size).toBe(5);
    await t.remove('a/d');
    expect(await t.stat('a/d')).toBeUndefined();
  });
});

describe('FileTransport closes what it opens once', () => {
  it('a write whose source fails: the file is closed through its handle only, never by number as well, and removed', async () => {
    // a write stream given the handle's fd closed that number itself when the failed pipeline
    // destroyed it, and the handle closed it again: by then the number could be a file another task
    // had just opened (it lost it: EBADF). fs.close(number) is what such a stream calls.
    const { root, t } = await setup();
    const closes = vi.spyOn(fs, 'close');
    try {
      const failing = () =>
        Readable.from(
          (async function* () {
            yield Buffer.alloc(1 << 20, 1);
            throw new Error('the source failed');
          })(),
        );
      await expect(t.write('tarport/x', failing)).rejects.toMatchObject({ message: expect.stringContaining('the source failed') });
      expect(closes).not.toHaveBeenCalled();
      expect(await readdir(join(root, 'tarport'))).toEqual([]);
      // and a write that succeeds still writes every byte
      const bytes = Buffer.alloc(3 << 20, 7);
      expect(await t.write('tarport/y', () => Readable.from([bytes.subarray(0, 1 << 20), bytes.subarray(1 << 20)]))).toEqual({ size: bytes.length });
      expect((await readFile(join(root, 'tarport', 'y'))).equals(bytes)).toBe(true);
    } finally {
      closes.mockRestore();
    }
  });
});
