// src/transport/file.ts: what a rename leaves durable (the folders whose entries it changed).
import { constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { tempDir } from '../../helpers.js';

/** Folders fsynced through the transport's own `open`, in order. */
const synced: string[] = [];

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    open: async (p: string, flags?: number, mode?: number) => {
      const fh = await real.open(p, flags, mode);
      if (typeof flags === 'number' && (flags & fsc.O_DIRECTORY) !== 0) {
        const sync = fh.sync.bind(fh);
        fh.sync = async () => {
          synced.push(p);
          return sync();
        };
      }
      return fh;
    },
  };
});

const { FileTransport } = await import('../../../src/transport/file.js');

describe('FileTransport.rename', () => {
  it('syncs the folder the name went into, and every folder it made for it with the parent of the first', async () => {
    const root = await tempDir();
    const t = new FileTransport(root);
    await t.write('tmp/x.part', () => Readable.from([Buffer.from('x')]));
    synced.length = 0;
    await t.rename('tmp/x.part', 'a/b/c/x');
    expect(synced).toEqual([join(root, 'a/b/c'), join(root, 'a/b'), join(root, 'a'), root]);
    synced.length = 0;
    await t.write('tmp/y.part', () => Readable.from([Buffer.from('y')]));
    await t.rename('tmp/y.part', 'a/b/c/y'); // its folder was there already
    expect(synced).toEqual([join(root, 'a/b/c')]);
  });
});
