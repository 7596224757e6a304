// src/transport/file.ts: what a rename leaves durable (the folders whose entries it changed).
import { readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { FileTransport } from '../../../src/transport/file.js';
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
