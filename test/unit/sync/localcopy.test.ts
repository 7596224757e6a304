import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { LocalCopier, checkFile, copyThroughBuffers, copyVerified as kernelCopyVerified } from '../../../src/sync/localcopy.js';
import { tempDir } from '../../helpers.js';

const descOf = (b: Buffer) => ({ digest: `sha256:${createHash('sha256').update(b).digest('hex')}`, size: b.length });

async function rejection(p: Promise<unknown>): Promise<TarportError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof TarportError)) throw new Error(`expected a TarportError, got ${String(e)}`);
  return e;
}

// sizes around the copy's 4 MiB buffers: empty, one byte, exactly one buffer, a buffer and a byte,
// and enough to pass a 16 MiB flush
const SIZES = [0, 1, 4 << 20, (4 << 20) + 1, (17 << 20) + 12345];

// both ways of copying: the kernel's copy then a hash of the target (where /proc names open files),
// and the one pass through buffers (where it does not); every case holds for each
describe.each([
  ['copyVerified (kernel copy, then the target hashed)', kernelCopyVerified],
  ['copyThroughBuffers (one pass: read, hash, write)', copyThroughBuffers],
])('%s', (_name, copyVerified) => {
  it.each(SIZES)('copies %i bytes exactly and reports every byte as progress', async (size) => {
    const dir = await tempDir();
    const data = randomBytes(size);
    await writeFile(join(dir, 'src'), data);
    let reported = 0;
    await copyVerified(join(dir, 'src'), join(dir, 'sub', 'dst'), descOf(data), 'object x', undefined, (n) => (reported += n));
    expect((await readFile(join(dir, 'sub', 'dst'))).equals(data)).toBe(true);
    expect(reported).toBe(size);
  });

  it('a flipped byte fails the copy with a digest mismatch and leaves no target behind', async () => {
    const dir = await tempDir();
    const data = randomBytes((5 << 20) + 3);
    const desc = descOf(data);
    data[data.length >> 1]! ^= 0x01;
    await writeFile(join(dir, 'src'), data);
    const e = await rejection(copyVerified(join(dir, 'src'), join(dir, 'dst'), desc, `object ${desc.digest}`));
    expect(e.code).toBe('DIGEST_MISMATCH');
    expect(e.message).toContain(`object ${desc.digest}: digest mismatch, expected ${desc.digest}, got sha256:`);
    expect(await readdir(dir)).toEqual(['src']);
  });

  it('a source shorter or longer than declared fails by size and leaves no target', async () => {
    const dir = await tempDir();
    const data = randomBytes(100_000);
    await writeFile(join(dir, 'src'), data);
    const short = await rejection(copyVerified(join(dir, 'src'), join(dir, 'dst'), { ...descOf(data), size: data.length + 1 }, 'object s'));
    expect(short.code).toBe('DIGEST_MISMATCH');
    expect(short.message).toBe(`object s: size mismatch, expected ${data.length + 1} bytes, got ${data.length}`);
    const long = await rejection(copyVerified(join(dir, 'src'), join(dir, 'dst'), { ...descOf(data), size: data.length - 1 }, 'object l'));
    expect(long.code).toBe('DIGEST_MISMATCH');
    expect(long.message).toBe(`object l: more bytes than the ${data.length - 1} declared`);
    expect(await readdir(dir)).toEqual(['src']);
  });

  it('a missing source is named, and nothing is created', async () => {
    const dir = await tempDir();
    const e = await rejection(copyVerified(join(dir, 'nope'), join(dir, 'dst'), { digest: `sha256:${'0'.repeat(64)}`, size: 1 }, 'object n'));
    expect(e.code).toBe('NOT_FOUND');
    expect(e.message).toContain('read object n');
    expect(await readdir(dir)).toEqual([]);
  });

  it('copies in a row come out exact while buffers are reused: larger, smaller, after a failed copy, and checked after', async () => {
    const dir = await tempDir();
    // 9 MiB fills three pooled buffers; 300 KiB takes them back cut short; a failed copy keeps its
    // own; 6 MiB and the checks then run on buffers that held other objects' bytes
    const objects = [9 << 20, 300 << 10, 5 << 20, 6 << 20].map((n) => randomBytes(n));
    const failing = objects[2]!;
    const failingDesc = descOf(failing);
    failing[7]! ^= 0x80;
    for (const [i, data] of objects.entries()) await writeFile(join(dir, `src${i}`), data);
    const copy = (i: number, desc = descOf(objects[i]!)) => copyVerified(join(dir, `src${i}`), join(dir, `dst${i}`), desc, `object ${i}`);
    await copy(0);
    await copy(1);
    expect((await rejection(copy(2, failingDesc))).code).toBe('DIGEST_MISMATCH');
    await copy(3);
    for (const i of [0, 1, 3]) {
      expect((await readFile(join(dir, `dst${i}`))).equals(objects[i]!)).toBe(true);
      expect(await checkFile(join(dir, `dst${i}`), descOf(objects[i]!), `object ${i}`)).toBe(true);
    }
    expect(await checkFile(join(dir, 'src2'), failingDesc, 'object 2')).toBe(false);
  });

  it('stops on abort and removes the partial target', async () => {
    const dir = await tempDir();
    const data = randomBytes(12 << 20);
    await writeFile(join(dir, 'src'), data);
    const ac = new AbortController();
    const copy = copyVerified(join(dir, 'src'), join(dir, 'dst'), descOf(data), 'object a', ac.signal, () => ac.abort());
    await expect(copy).rejects.toThrow();
    expect(await readdir(dir)).toEqual(['src']);
  });
});

describe('checkFile', () => {
  it('says whether a file holds exactly the object: intact, a flipped byte, cut, missing', async () => {
    const dir = await tempDir();
    const data = randomBytes((4 << 20) + 17);
    const desc = descOf(data);
    const p = join(dir, 'obj');
    await writeFile(p, data);
    expect(await checkFile(p, desc, 'object')).toBe(true);
    const flipped = Buffer.from(data);
    flipped[0]! ^= 0x80;
    await writeFile(p, flipped);
    expect(await checkFile(p, desc, 'object')).toBe(false);
    await writeFile(p, data.subarray(0, data.length - 1));
    expect(await checkFile(p, desc, 'object')).toBe(false);
    expect(await checkFile(join(dir, 'missing'), desc, 'object')).toBe(false);
    await writeFile(p, Buffer.alloc(0));
    expect(await checkFile(p, descOf(Buffer.alloc(0)), 'object')).toBe(true);
  });
});

describe('LocalCopier', () => {
  it('copies and checks on every lane (from sources the lanes run on this thread)', async () => {
    const dir = await tempDir();
    const data = randomBytes(1 << 20);
    const desc = descOf(data);
    await writeFile(join(dir, 'src'), data);
    const copier = new LocalCopier();
    try {
      expect(LocalCopier.lanes()).toBeGreaterThanOrEqual(1);
      expect(LocalCopier.lanes()).toBeLessThanOrEqual(4);
      for (const lane of [0, 1]) {
        await copier.copy(lane, join(dir, 'src'), join(dir, `dst${lane}`), desc, 'object');
        expect((await readFile(join(dir, `dst${lane}`))).equals(data)).toBe(true);
        expect(await copier.check(lane, join(dir, `dst${lane}`), desc, 'object')).toBe(true);
      }
      const bad = Buffer.from(data);
      bad[7]! ^= 1;
      await writeFile(join(dir, 'bad'), bad);
      expect(await copier.check(1, join(dir, 'bad'), desc, 'object')).toBe(false);
      expect((await rejection(copier.copy(1, join(dir, 'bad'), join(dir, 'dst-bad'), desc, 'object'))).code).toBe('DIGEST_MISMATCH');
      expect((await readdir(dir)).sort()).toEqual(['bad', 'dst0', 'dst1', 'src']);
    } finally {
      await copier.close();
    }
  });
});

describe.each([
  ['copyVerified', kernelCopyVerified],
  ['copyThroughBuffers', copyThroughBuffers],
])('%s does not follow links or open FIFOs (a source or destination made hostile after its check)', (_name, copyVerified) => {
  it('a source that is a link to a host file is refused (INTEGRITY), nothing of it copied', async () => {
    const dir = await tempDir();
    const secret = Buffer.from('TARPORT-HOST-SECRET');
    await writeFile(join(dir, 'host-file'), secret);
    await symlink(join(dir, 'host-file'), join(dir, 'src'));
    const e = await rejection(copyVerified(join(dir, 'src'), join(dir, 'dst'), descOf(secret), 'object x'));
    expect(e.code).toBe('INTEGRITY');
    expect(e.message).not.toContain('SECRET');
    expect(await readdir(dir)).not.toContain('dst');
  });

  it('a source that is a FIFO is refused at once, not opened for reading (which would block forever)', async () => {
    const dir = await tempDir();
    execFileSync('mkfifo', [join(dir, 'src')]);
    const t0 = Date.now();
    expect((await rejection(copyVerified(join(dir, 'src'), join(dir, 'dst'), descOf(Buffer.alloc(1)), 'object x'))).code).toBe('INTEGRITY');
    expect(await checkFile(join(dir, 'src'), descOf(Buffer.alloc(1)), 'object x')).toBe(false);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('a destination that is a link out is not written through: the host file stays as it was', async () => {
    const dir = await tempDir();
    const data = randomBytes(1000);
    await writeFile(join(dir, 'src'), data);
    await writeFile(join(dir, 'host-file'), 'HOST');
    await symlink(join(dir, 'host-file'), join(dir, 'dst'));
    await expect(copyVerified(join(dir, 'src'), join(dir, 'dst'), descOf(data), 'object x')).rejects.toBeDefined();
    expect(await readFile(join(dir, 'host-file'), 'utf8')).toBe('HOST');
  });
});

describe('copyVerified through the kernel', () => {
  it('refuses a source of the wrong size before it copies a byte: no target is created', async () => {
    const dir = await tempDir();
    const data = randomBytes(3 << 20);
    await writeFile(join(dir, 'src'), data);
    const e = await rejection(kernelCopyVerified(join(dir, 'src'), join(dir, 'sub', 'dst'), { ...descOf(data), size: 10 }, 'object w'));
    expect(e.message).toBe('object w: more bytes than the 10 declared');
    // the target's folder was never made: the size was refused before anything was written
    expect(await readdir(dir)).toEqual(['src']);
  });

  it('never writes into a file already at the temporary name (a leftover or a planted file stays as it was)', async () => {
    const dir = await tempDir();
    const data = randomBytes(1000);
    await writeFile(join(dir, 'src'), data);
    await writeFile(join(dir, 'dst'), 'PLANTED');
    await expect(kernelCopyVerified(join(dir, 'src'), join(dir, 'dst'), descOf(data), 'object x')).rejects.toBeInstanceOf(TarportError);
    expect(await readFile(join(dir, 'dst'), 'utf8')).toBe('PLANTED');
  });
});
