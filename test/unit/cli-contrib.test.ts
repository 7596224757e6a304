import { execFile } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ROOT, tarportInProcess, tempDir } from '../helpers.js';

const run = promisify(execFile);
const UNITS = join(ROOT, 'contrib/systemd');

/** systemd-analyze verify of unit files, with ExecStart pointing at this checkout's tarport. */
async function verify(files: Record<string, string>): Promise<{ code: number; output: string }> {
  const dir = await tempDir();
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text.replaceAll('/usr/local/bin/tarport', join(ROOT, 'bin/tarport.js')));
  try {
    const r = await run('systemd-analyze', ['verify', '--man=no', ...Object.keys(files).map((f) => join(dir, f))], { cwd: dir });
    return { code: 0, output: r.stdout + r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, output: x.stdout + x.stderr };
  }
}

describe('shipped operations files', () => {
  it('the systemd units verify: watch and poll agents, pull service and its timer', async () => {
    const names = (await readdir(UNITS)).sort();
    expect(names).toEqual(['tarport-poll.service', 'tarport-pull.service', 'tarport-pull.timer', 'tarport-watch.service']);
    const files = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await readFile(join(UNITS, n), 'utf8')] as const)));
    const r = await verify(files);
    expect(r.output).toBe('');
    expect(r.code).toBe(0);
  });

  it('the check can fail: a unit with an unknown key or a missing program is refused', async () => {
    const watch = await readFile(join(UNITS, 'tarport-watch.service'), 'utf8');
    const typo = await verify({ 'tarport-watch.service': watch.replace('Restart=on-failure', 'Restrat=on-failure') });
    expect(typo.output).toContain("Unknown key 'Restrat'");
    const missing = await verify({ 'tarport-watch.service': watch.replace('/usr/local/bin/tarport', '/nonexistent/tarport') });
    expect(missing.code).not.toBe(0);
  });

  it('every unit and cron line runs a command and flags that tarport has', async () => {
    const lines = [
      ...(await Promise.all((await readdir(UNITS)).map((n) => readFile(join(UNITS, n), 'utf8')))).flatMap((t) => t.split('\n').filter((l) => l.startsWith('ExecStart='))),
      ...(await readFile(join(ROOT, 'contrib/cron/tarport'), 'utf8')).split('\n').filter((l) => /^[\d*]/.test(l)),
    ];
    expect(lines).toHaveLength(7);
    for (const line of lines) {
      const words = line.replace(/^.*?tarport (?=[a-z])/, '').split(/\s+/);
      const { code, stdout } = await tarportInProcess([words[0]!, '--help']);
      expect(code, line).toBe(0);
      for (const flag of words.filter((w) => w.startsWith('--') && w !== '--config' && w !== '--quiet')) expect(stdout, `${line}: ${flag}`).toContain(flag);
    }
  });
});
