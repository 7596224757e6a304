import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../src/archive/index.js';
import { filesBelow, tarport, tempDir } from '../helpers.js';

async function compressionUsed(repo: string): Promise<string> {
  const [rec] = (await filesBelow(join(repo, 'tarport/releases')));
  return JSON.parse(await readFile(join(repo, 'tarport/releases', rec!), 'utf8')).layers[0].compression;
}

describe('flags, environment and config file', () => {
  it('a flag wins over the environment, which wins over the file', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir);
    const cfg = join(dir, 'tarport.toml');
    await writeFile(cfg, `compress = "gzip"\nto = "${join(dir, 'from-file')}"\n`);
    expect((await tarport(['--config', cfg, 'push', v1!])).code).toBe(0);
    expect(await compressionUsed(join(dir, 'from-file'))).toBe('gzip');
    expect((await tarport(['--config', cfg, 'push', v1!, '--to', join(dir, 'env')], { TARPORT_COMPRESS: 'none' })).code).toBe(0);
    expect(await compressionUsed(join(dir, 'env'))).toBe('none');
    expect((await tarport(['--config', cfg, 'push', v1!, '--to', join(dir, 'flag'), '--compress', 'zstd'], { TARPORT_COMPRESS: 'none' })).code).toBe(0);
    expect(await compressionUsed(join(dir, 'flag'))).toBe('zstd');
  });

  it('YAML works too, and unknown keys are refused by name with exit 2', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir);
    const cfg = join(dir, 'tarport.yaml');
    await writeFile(cfg, `to: ${join(dir, 'repo')}\ncompres: gzip\nsign_kye: x\n`);
    const r = await tarport(['--config', cfg, 'push', v1!]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(cfg);
    expect(r.stderr).toMatch(/unknown keys "compres", "sign_kye"/);
    expect(await filesBelow(join(dir, 'repo'))).toEqual([]);
  });

  it('bad usage exits 2; --help and --version exit 0', async () => {
    expect((await tarport(['push'])).code).toBe(2);
    expect((await tarport(['push', 'x.tar', '--bogus'])).code).toBe(2);
    expect((await tarport(['nonsense'])).code).toBe(2);
    expect((await tarport(['--help'])).code).toBe(0);
    expect((await tarport(['--version'])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('a missing repository location or a password in a URL is a usage error', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir);
    const noTo = await tarport(['push', v1!]);
    expect(noTo.code).toBe(2);
    expect(noTo.stderr).toMatch(/--to URL/);
    const pw = await tarport(['push', v1!, '--to', 'sftp://me:secret@example.invalid/repo']);
    expect(pw.code).toBe(2);
    expect(pw.stderr).not.toContain('secret');
    expect(pw.stderr).toMatch(/TARPORT_PASSWORD/);
  });
});
