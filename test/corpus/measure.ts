import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT, tempDir, type CliResult } from '../helpers.js';

export interface Measured extends CliResult {
  /** Wall time of the run. */
  readonly ms: number;
  /** Peak resident memory of the CLI process (VmHWM, threads included), MiB; -1 when it did not exit by itself. */
  readonly peakMiB: number;
  /** It was still running after the time limit and was killed. */
  readonly hung: boolean;
}

/** Runs the real CLI as tarport() does, with its peak RSS and wall time; kills it after `limitMs`. */
export async function measured(args: string[], env: Record<string, string | undefined> = {}, limitMs = 120_000): Promise<Measured> {
  const probe = join(await tempDir('tarport-probe-'), 'rss.json');
  const t0 = Date.now();
  const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), ...args], {
    env: { ...process.env, ...env, NODE_OPTIONS: `--import=${join(ROOT, 'test/corpus/probe.mjs')}`, TARPORT_TEST_PROBE: probe },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    child.kill('SIGKILL');
  }, limitMs);
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? -1));
  });
  clearTimeout(timer);
  const ms = Date.now() - t0;
  const peak = await readFile(probe, 'utf8').then((s) => (JSON.parse(s) as { maxRssKiB: number }).maxRssKiB, () => -1024);
  return { code, stdout, stderr, ms, peakMiB: Math.round(peak / 1024), hung };
}
