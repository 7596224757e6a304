// src/folders.ts: mkdir -p one level at a time, bounded where Node's recursive mkdir spins.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeFolders, makeFoldersSync } from '../../src/folders.js';
import { tempDir } from '../helpers.js';

describe('makeFolders', () => {
  it('makes every missing level, and is content with a folder that is there', async () => {
    const root = await tempDir();
    const deep = join(root, 'a', 'b', 'c');
    await makeFolders(deep);
    expect((await stat(deep)).isDirectory()).toBe(true);
    await makeFolders(deep);
    expect((await stat(deep)).isDirectory()).toBe(true);
  });

  it('a place that refuses every new entry (under /proc) fails at once with its error, where Node 20\'s recursive mkdir spins for ever', async () => {
    const got = await Promise.race([makeFolders('/proc/tarport-test/state').then(() => 'made', (e: unknown) => (e as NodeJS.ErrnoException).code), new Promise((r) => setTimeout(() => r('still running after 2 s'), 2_000))]);
    expect(got).toBe('ENOENT');
  });

  it('a file in the way is its error (the state folder named by a file)', async () => {
    const root = await tempDir();
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(root, 'f'), 'x');
    await expect(makeFolders(join(root, 'f', 'state'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});

describe('what makeFolders made', () => {
  it('returns the topmost folder it made, or undefined when all were there, as the recursive mkdir does; the sync twin alike', async () => {
    const root = await tempDir();
    expect(await makeFolders(join(root, 'a', 'b', 'c'))).toBe(join(root, 'a'));
    expect(await makeFolders(join(root, 'a', 'b', 'c'))).toBeUndefined();
    expect(await makeFolders(join(root, 'a', 'x'))).toBe(join(root, 'a', 'x'));
    expect(makeFoldersSync(join(root, 's', 't'))).toBe(join(root, 's'));
    expect(makeFoldersSync(join(root, 's', 't'))).toBeUndefined();
    expect((await stat(join(root, 's', 't'))).isDirectory()).toBe(true);
  });

  it('gives every folder it made the mode asked for', async () => {
    const root = await tempDir();
    await makeFolders(join(root, 'p', 'q'), 0o700);
    makeFoldersSync(join(root, 'r', 's'), 0o700);
    for (const d of ['p', 'p/q', 'r', 'r/s']) expect(((await stat(join(root, d))).mode & 0o777).toString(8)).toBe('700');
  });

  it('the sync twin is bounded under /proc as well', () => {
    expect(() => makeFoldersSync('/proc/tarport-test/cache')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});
