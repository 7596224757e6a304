import { homedir } from 'node:os';
import { join } from 'node:path';
import { TarportError } from '../errors.js';
import { Repository } from '../repo/index.js';
import { CountingTransport, openTransport, parseLocation, type TransportCounters } from '../transport/index.js';
import type { Output } from './output.js';

/** What every command gets: output, cancellation. */
export interface Context {
  readonly out: Output;
  readonly signal: AbortSignal;
}

/** Opens a repository; its transport counts requests and bytes for the --json report. */
export async function openRepository(url: string | undefined, flag: string): Promise<Repository & { counters: TransportCounters }> {
  if (!url) throw new TarportError('USAGE', `no repository given: pass ${flag} URL (a path, file://, ftp://, ftps:// or sftp://)`);
  const loc = parseLocation(url);
  const counting = new CountingTransport(await openTransport(loc, {}));
  return Object.assign(new Repository(counting), { counters: counting.counters });
}

export function defaultStateDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/tarport';
  const base = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'tarport');
}

export function parseDuration(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(s.trim());
  if (!m) throw new TarportError('USAGE', `${what} ${JSON.stringify(s)}: expected a duration such as 30s, 5m, 12h or 90d`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return n * unit;
}
