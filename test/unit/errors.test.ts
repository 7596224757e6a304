// src/errors.ts: a system error becomes a typed one with advice the user can act on.
import { describe, expect, it } from 'vitest';
import { fuseIn, wrapSystemError, wrapWriteError } from '../../src/errors.js';

const sys = (code: string, message: string) => Object.assign(new Error(message), { code });

describe('wrapSystemError', () => {
  it.each([
    ['ENOSPC', 'no space left on device; free space, then run again'],
    ['EFBIG', 'the file system takes no file this large (FAT32: at most 4 GiB - 1 byte); for a stick, sync with --max-file-size fat32'],
    ['ENAMETOOLONG', 'a name too long for the file system (255 characters a folder or file)'],
  ])('%s: IO, not retried, with its advice', (code, advice) => {
    const e = wrapSystemError(sys(code, `${code}: raw`), 'copy object x to /media/stick');
    expect(e).toMatchObject({ code: 'IO', retryable: false, message: `copy object x to /media/stick: ${advice}` });
  });

  it('an error it has no advice for keeps its own message', () => {
    expect(wrapSystemError(sys('EIO', 'EIO: i/o error, read'), 'read x')).toMatchObject({ code: 'IO', message: 'read x: EIO: i/o error, read' });
  });
});

describe('wrapWriteError', () => {
  const eperm = Object.assign(new Error('EPERM: operation not permitted, write'), { code: 'EPERM', syscall: 'write' });

  it('a refusal where the file system has room is a refusal (permission denied), as wrapSystemError says it', async () => {
    const e = await wrapWriteError(eperm, 'write x to file:///r', process.cwd());
    expect([e.code, e.message]).toEqual(['IO', 'write x to file:///r: permission denied']);
  });

  it('an i/o error where the file system has room is an i/o error (a failing disk), not a full one', async () => {
    const eio = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO', syscall: 'write' });
    const e = await wrapWriteError(eio, 'write x to file:///r', process.cwd());
    expect([e.code, e.message]).toEqual(['IO', 'write x to file:///r: EIO: i/o error, write']);
  });

  it('a folder whose file system cannot be asked (a file where a folder should be) leaves the error as it came', async () => {
    const { mkdtemp, writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const file = join(await mkdtemp(join(tmpdir(), 'tarport-errors-')), 'a-file');
    await writeFile(file, 'x');
    const e = await wrapWriteError(eperm, 'write x', join(file, 'folder'));
    expect(e.message).toBe('write x: permission denied');
  });
});

describe('fuseIn', () => {
  it('tells a FUSE mount by the mount table, without asking the file system (fusefat on libfuse 3 never answers a statfs of a full stick)', () => {
    const table = [
      '22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw',
      '45 22 0:42 / /media/my\\040stick rw,nosuid,nodev,relatime shared:30 - fuse.fusefat fusefat rw,user_id=0,group_id=0',
      '46 45 7:0 / /media/my\\040stick/inner rw,relatime - ext4 /dev/loop0 rw',
      '47 22 7:1 / /media/exfat rw,relatime - fuseblk /dev/loop1 rw',
      '',
    ].join('\n');
    expect(fuseIn(table, '/media/my stick/repo/blobs')).toBe(true);
    expect(fuseIn(table, '/media/my stick')).toBe(true);
    expect(fuseIn(table, '/media/my stick/inner/x')).toBe(false); // a mount inside the stick's
    expect(fuseIn(table, '/media/my stickx')).toBe(false);
    expect(fuseIn(table, '/media/exfat/repo')).toBe(true);
    expect(fuseIn(table, '/tmp')).toBe(false);
    expect(fuseIn('', '/tmp')).toBe(false);
  });
});
