import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT, tarport, tempDir, type CliResult } from '../helpers.js';

export interface Measured extends CliResult {
  /** Wall time of the run. */
  readonly ms: number;
  /** Peak resident memory of the CLI process, MiB. */
  readonly peakMiB: number;
}

/** Runs the CLI as tarport() does, with its peak RSS and wall time. */
export async function measured(args: string[], env: Record<string, string | undefined> = {}): Promise<Measured> {
  const probe = join(await tempDir('tarport-probe-'), 'rss.json');
  const t0 = Date.now();
  const r = await tarport(args, { ...env, NODE_OPTIONS: `--import=${join(ROOT, 'test/corpus/probe.mjs')}`, TARPORT_TEST_PROBE: probe });
  const ms = Date.now() - t0;
  const { maxRssKiB } = JSON.parse(await readFile(probe, 'utf8')) as { maxRssKiB: number };
  return { ...r, ms, peakMiB: Math.round(maxRssKiB / 1024) };
}
