import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { putTool, readToolFiles, SUMS_FILE, SUMS_SIGNATURE, TOOL_FOLDER } from '../../src/sync/tool.js';
import { FileTransport } from '../../src/transport/file.js';
import { tempDir } from '../helpers.js';

const run = promisify(execFile);

async function setup() {
  const dir = await tempDir('tarport-tool-');
  const stick = join(dir, 'stick');
  await mkdir(stick);
  const exe = join(dir, 'tarport-linux-x64');
  await writeFile(exe, Buffer.alloc(300_000, 'x'));
  const tgz = join(dir, 'tarport-0.3.0.tgz');
  await writeFile(tgz, 'not really a tarball');
  return { dir, stick, exe, tgz, dst: new FileTransport(stick) };
}

describe('the tool on the stick (sync --with-tool)', () => {
  it('writes the files, a README and SHA256SUMS that sha256sum -c checks, and a signature of exactly those sums', async () => {
    const s = await setup();
    const files = await readToolFiles([s.exe, s.tgz]);
    let signed: Buffer | undefined;
    const r = await putTool(s.dst, files, { sign: async (d) => ((signed = d), Buffer.from('SIG')) });
    const folder = join(s.stick, TOOL_FOLDER);
    expect((await readdir(folder)).sort()).toEqual(['README.txt', SUMS_FILE, SUMS_SIGNATURE, 'tarport-0.3.0.tgz', 'tarport-linux-x64']);
    const sums = await readFile(join(folder, SUMS_FILE));
    expect(signed?.equals(sums)).toBe(true);
    expect(await readFile(join(folder, SUMS_SIGNATURE), 'utf8')).toBe('SIG');
    const { stdout } = await run('sha256sum', ['-c', SUMS_FILE], { cwd: folder });
    expect(stdout.trim().split('\n').sort()).toEqual(['README.txt: OK', 'tarport-0.3.0.tgz: OK', 'tarport-linux-x64: OK']);
    expect(r.signed).toBe(true);
  });

  it('a later delivery replaces the tool, drops what it does not carry, and an unsigned one leaves no old signature', async () => {
    const s = await setup();
    await putTool(s.dst, await readToolFiles([s.exe, s.tgz]), { sign: async () => Buffer.from('SIG') });
    await writeFile(s.exe, Buffer.alloc(1000, 'y')); // the update
    const events: string[] = [];
    await putTool(s.dst, await readToolFiles([s.exe]), { onEvent: (e) => events.push(e.kind === 'tool-removed' ? `removed ${e.name}` : e.kind) });
    const folder = join(s.stick, TOOL_FOLDER);
    expect((await readdir(folder)).sort()).toEqual(['README.txt', SUMS_FILE, 'tarport-linux-x64']);
    expect(await readFile(join(folder, 'tarport-linux-x64'), 'utf8')).toBe('y'.repeat(1000));
    expect(events).toEqual(['tool', 'removed tarport-0.3.0.tgz', 'tool-sums']);
    await run('sha256sum', ['-c', SUMS_FILE], { cwd: folder });
  });

  it('refuses a missing file, a folder, and a name a FAT32 stick or sha256sum cannot carry, before writing anything', async () => {
    const s = await setup();
    await expect(readToolFiles([join(s.dir, 'nope')])).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringContaining('nope') });
    await expect(readToolFiles([s.dir])).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringContaining('not a regular file') });
    const spaced = join(s.dir, 'tar port');
    await writeFile(spaced, 'x');
    await expect(readToolFiles([spaced])).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('"tar port"') });
    const sums = join(s.dir, SUMS_FILE);
    await writeFile(sums, 'x');
    await expect(readToolFiles([sums])).rejects.toMatchObject({ code: 'USAGE' });
    await expect(readToolFiles([s.exe, s.exe])).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('already carried') });
    expect(await readdir(s.stick)).toEqual([]);
  });
});
