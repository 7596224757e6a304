import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { folderJournal, type JournalEntry } from '../../../src/transport/journal.js';
import { tempDir } from '../../helpers.js';

// The record of multipart uploads kept between runs (the S3 transport's resume across runs; against
// a real server: test/integration/s3.test.ts).

const entry = (target: string, parts = 2): JournalEntry => ({
  target,
  uploadId: 'u-1',
  size: 30 << 20,
  partSize: 5 << 20,
  parts: Array.from({ length: parts }, (_, i) => ({ n: i + 1, etag: `"e${i + 1}"` })),
});

describe('folderJournal', () => {
  it('keeps an entry per target, replaces it whole, and drops it', async () => {
    const dir = join(await tempDir(), 'journal');
    const j = folderJournal(dir, (m) => expect.fail(m));
    expect(await j.load('s3 a')).toBeUndefined(); // no folder yet: no record
    await j.save(entry('s3 a', 1));
    await j.save(entry('s3 b', 3));
    await j.save(entry('s3 a', 2));
    expect(await j.load('s3 a')).toEqual(entry('s3 a', 2));
    expect((await j.load('s3 b'))?.parts).toHaveLength(3);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]); // written by rename
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    await j.drop('s3 a');
    await j.drop('s3 a'); // twice is fine
    expect(await j.load('s3 a')).toBeUndefined();
    expect(await j.load('s3 b')).toBeDefined();
  });

  it('an unreadable or foreign record is no record (the upload starts afresh)', async () => {
    const dir = join(await tempDir(), 'journal');
    const j = folderJournal(dir, (m) => expect.fail(m));
    await j.save(entry('s3 a'));
    const [file] = await readdir(dir);
    await writeFile(join(dir, file!), '{"target":"s3 a","uploadId":');
    expect(await j.load('s3 a')).toBeUndefined();
    await writeFile(join(dir, file!), JSON.stringify({ ...entry('s3 a'), uploadId: '' }));
    expect(await j.load('s3 a')).toBeUndefined();
    // a record whose file name matches but whose target differs (a hash collision) is not this upload's
    await writeFile(join(dir, file!), JSON.stringify(entry('s3 other')));
    expect(await j.load('s3 a')).toBeUndefined();
  });

  it('a folder that cannot be written costs the resume only: said once, nothing thrown, nothing left', async () => {
    const base = await tempDir();
    await writeFile(join(base, 'file'), 'x');
    const dir = join(base, 'file', 'journal'); // below a file: mkdir fails with ENOTDIR
    const faults: string[] = [];
    const j = folderJournal(dir, (m) => faults.push(m));
    await j.save(entry('s3 a'));
    await j.save(entry('s3 a', 3));
    await j.drop('s3 a');
    expect(faults).toHaveLength(1);
    expect(faults[0]).toContain(`cannot write the record of a multipart upload in ${dir} (ENOTDIR`);
    expect(faults[0]).toContain('the next run sends it from the start');
    expect(await j.load('s3 a')).toBeUndefined();
    expect((await readdir(base)).sort()).toEqual(['file']);
  });
});
