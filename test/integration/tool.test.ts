import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { fixture, tarport, tempDir } from '../helpers.js';

// docs/install.md: the tool crosses the gap with the images, and the low side checks it with
// sha256sum and real gpg before the first run.
const run = promisify(execFile);
let dir: string;

beforeAll(async () => {
  dir = await tempDir();
  expect((await tarport(['keys', 'generate', '--uid', 'producer <producer@example.invalid>', '--out', join(dir, 'producer'), '--type', 'ecc'])).code).toBe(0);
  expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', join(dir, 'high'), '--sign-key', join(dir, 'producer.sec.asc')])).code).toBe(0);
});

async function gpgVerify(folder: string, gnupg: string) {
  return run('gpg', ['--batch', '--status-fd', '1', '--verify', 'SHA256SUMS.asc', 'SHA256SUMS'], { cwd: folder, env: { ...process.env, GNUPGHOME: gnupg } });
}

describe('sync --with-tool', () => {
  it('puts the tool on the stick beside the repository; sha256sum -c and gpg --verify check it, a tampered one fails', async () => {
    const exe = join(dir, 'tarport-linux-x64');
    await writeFile(exe, Buffer.alloc(1 << 20, 'tool v1'));
    const stick = join(dir, 'stick');
    const r = await tarport(['sync', '--init', join(dir, 'high'), stick, '--with-tool', exe, '--sign-key', join(dir, 'producer.sec.asc'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tool).toMatchObject({ signed: true, files: [{ name: 'tarport-linux-x64', size: 1 << 20 }] });
    // the repository beside it is whole: check passes, the folder is no part of it
    expect((await tarport(['check', stick, '--trust', join(dir, 'producer.pub.asc')])).code).toBe(0);

    const folder = join(stick, 'tarport-tool');
    const gnupg = join(dir, 'gnupg');
    await run('mkdir', ['-m', '700', gnupg]);
    await run('gpg', ['--batch', '--import', join(dir, 'producer.pub.asc')], { env: { ...process.env, GNUPGHOME: gnupg } });
    const v = await gpgVerify(folder, gnupg);
    expect(v.stdout).toContain('[GNUPG:] GOODSIG');
    expect((await run('sha256sum', ['-c', 'SHA256SUMS'], { cwd: folder })).stdout).toContain('tarport-linux-x64: OK');

    // a changed tool fails sha256sum; changed sums fail gpg
    await writeFile(join(folder, 'tarport-linux-x64'), Buffer.alloc(1 << 20, 'evil'));
    await expect(run('sha256sum', ['-c', 'SHA256SUMS'], { cwd: folder })).rejects.toMatchObject({ code: 1 });
    await writeFile(join(folder, 'SHA256SUMS'), 'f'.repeat(64) + '  tarport-linux-x64\n');
    await expect(gpgVerify(folder, gnupg)).rejects.toMatchObject({ stdout: expect.stringContaining('[GNUPG:] BADSIG') });

    // a later stick carries the update the same way
    await writeFile(exe, Buffer.alloc(2 << 20, 'tool v2'));
    expect((await tarport(['sync', '--init', join(dir, 'high'), stick, '--with-tool', exe, '--sign-key', join(dir, 'producer.sec.asc')])).code).toBe(0);
    expect((await gpgVerify(folder, gnupg)).stdout).toContain('[GNUPG:] GOODSIG');
    expect((await run('sha256sum', ['-c', 'SHA256SUMS'], { cwd: folder })).stdout).toContain('tarport-linux-x64: OK');
  });

  it('a tool file that is not there stops the sync before it copies anything (exit 2)', async () => {
    const r = await tarport(['sync', '--init', join(dir, 'high'), join(dir, 'stick2'), '--with-tool', join(dir, 'missing-tool')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing-tool');
    await expect(run('ls', [join(dir, 'stick2')])).rejects.toMatchObject({ code: 2 });
  });
});
