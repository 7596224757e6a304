// src/folders.ts: mkdir -p one level at a time, bounded where Node's recursive mkdir spins.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeFolders } from '../../src/folders.js';
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
