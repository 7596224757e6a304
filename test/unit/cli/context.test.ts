// src/cli/context.ts: the repository a command opens.
import { cp, mkdir, readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CATALOG_TTL_BOUNDS, openRepository, parseDuration, wholeNumber } from '../../../src/cli/context.js';
import { sha256 } from '../../../src/crypto/index.js';
import { Repository } from '../../../src/repo/index.js';
import { FileTransport } from '../../../src/transport/index.js';
import { tarportInProcess, tempDir } from '../../helpers.js';

describe('openRepository: a write through what the commands open holds its folder', () => {
  // the commands' repository wraps its transport (counting what crosses it): the hold must survive it
  it.each([
    ['a stick unmounted (its empty mount point left)', 'is another folder than'],
    ['another stick of the same repository mounted in its place (the same folder)', 'no longer holds'],
  ])('%s: the rest of the write is refused, not written there', async (what, says) => {
    const base = await tempDir();
    const root = join(base, 'stick');
    await new Repository(new FileTransport(root)).init();
    await cp(root, join(base, 'copy'), { recursive: true });
    const repo = await openRepository(root, '--to', {}, { write: true });
    const tx = await repo.begin();
    for (const f of await readdir(root)) await rename(join(root, f), join(base, `first-${f}`));
    if (what.startsWith('a stick unmounted')) {
      await rename(root, join(base, 'unplugged'));
      await mkdir(root);
    } else {
      for (const f of await readdir(join(base, 'copy'))) await rename(join(base, 'copy', f), join(root, f));
    }
    const before = (await readdir(root)).sort();
    const bytes = Buffer.from('an object copied after the stick went');
    await expect(tx.putObject(sha256(bytes), { stream: () => Readable.from([bytes]) })).rejects.toMatchObject({ code: 'IO', retryable: false, message: expect.stringContaining(`the repository folder ${says}`) });
    await tx.end();
    await repo.close();
    expect((await readdir(root)).sort()).toEqual(before);
  });
});

describe('parseDuration: a duration flag within its bounds', () => {
  it('a wait (--interval, --settle, --give-up) is at most 24 days, which Node timers can wait; beyond, refused naming the value, never taken for none', () => {
    expect([parseDuration('100ms', '--interval'), parseDuration('1.5m', '--interval'), parseDuration('24d', '--settle')]).toEqual([100, 90_000, 24 * 86_400_000]);
    expect(() => parseDuration('30d', '--interval')).toThrow(expect.objectContaining({ code: 'USAGE', message: '--interval "30d": at most 24d (the longest a timer waits)' }));
  });

  it('--catalog-ttl: 0 (no expiry, a user may think; expired as it is written) and past 100 years are refused; in between taken', () => {
    expect([parseDuration('1ms', '--catalog-ttl', CATALOG_TTL_BOUNDS), parseDuration('36500d', '--catalog-ttl', CATALOG_TTL_BOUNDS)]).toEqual([1, 36_500 * 86_400_000]);
    for (const bad of ['0', '0s', '36501d', '999999999d']) {
      expect(() => parseDuration(bad, '--catalog-ttl', CATALOG_TTL_BOUNDS)).toThrow(
        expect.objectContaining({ code: 'USAGE', message: `--catalog-ttl ${JSON.stringify(bad)}: more than 0 (it is not "no expiry": a catalog of 0 expires as it is written) and at most 36500d (100 years)` }),
      );
    }
  });
});

describe('wholeNumber: the count flags (--connections, --keep, --keep-images)', () => {
  it('takes decimal digits only; 0x2, 1e1, 2.0, -1 and blanks are not numbers (NaN, which each flag refuses by name)', () => {
    expect([wholeNumber('0'), wholeNumber(' 12 '), wholeNumber(3)]).toEqual([0, 12, 3]);
    for (const bad of ['0x2', '1e1', '2.0', '-1', '', ' ', '+1', '0b1']) expect(wholeNumber(bad), bad).toBeNaN();
  });

  it('through the command line: gc --keep 0x2 is a usage error (exit 2) naming the value', async () => {
    const repo = join(await tempDir(), 'repo');
    const r = await tarportInProcess(['gc', repo, '--keep', '0x2', '--json']);
    expect([r.code, JSON.parse(r.stdout)]).toEqual([2, { error: { code: 'USAGE', message: '--keep "0x2": how many versions per tag to keep, 1 or more' } }]);
  });
});

describe('openRepository: a location that is a file', () => {
  it('is a usage error (exit 2) naming the flag and the file, for a writer and a reader alike', async () => {
    const file = join(await tempDir(), 'app.tar');
    await writeFile(file, 'not a folder');
    for (const args of [['push', file, '--to', file], ['check', file]]) {
      const r = await tarportInProcess([...args, '--json']);
      const flag = args[0] === 'push' ? '--to' : 'URL';
      expect([r.code, (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error.code], args.join(' ')).toEqual([2, 'USAGE']);
      expect(r.stderr, flag).toContain(`${flag} ${file}: a file, not a folder; a repository is a folder (tarport init creates one)`);
    }
  });
});
