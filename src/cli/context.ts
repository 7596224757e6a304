import { homedir } from 'node:os';
import { join } from 'node:path';
import { TarportError } from '../errors.js';
import { loadSigningKey, signDetached } from '../crypto/index.js';
import { Repository } from '../repo/index.js';
import { readFile } from 'node:fs/promises';
import { CountingTransport, openTransport, parseLocation, type TransportCounters, type TransportOptions } from '../transport/index.js';
import type { Output } from './output.js';

/** What every command gets: output, cancellation. */
export interface Context {
  readonly out: Output;
  readonly signal: AbortSignal;
}

/** Flags that every command taking a repository URL accepts. */
export interface ConnectionFlags {
  passwordFile?: string;
  ca?: string;
  identity?: string;
  knownHosts?: string;
  connections?: string;
  idleTimeout?: string;
}

/** The password: TARPORT_PASSWORD or --password-file, never argv (CLI.md). */
export async function readPassword(flags: ConnectionFlags): Promise<string | undefined> {
  if (flags.passwordFile) {
    try {
      return (await readFile(flags.passwordFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (e) {
      throw new TarportError('CONFIG', `--password-file ${flags.passwordFile}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (e as Error).message}`);
    }
  }
  return process.env.TARPORT_PASSWORD;
}

export async function transportOptions(flags: ConnectionFlags): Promise<TransportOptions> {
  const password = await readPassword(flags);
  let connections: number | undefined;
  if (flags.connections !== undefined) {
    connections = Number(flags.connections);
    if (!Number.isInteger(connections) || connections < 1 || connections > 16) throw new TarportError('USAGE', `--connections ${JSON.stringify(flags.connections)}: a whole number from 1 to 16`);
  }
  let idleTimeoutMs: number | undefined;
  if (flags.idleTimeout !== undefined) {
    idleTimeoutMs = parseDuration(flags.idleTimeout, '--idle-timeout');
    if (!(idleTimeoutMs >= 100 && idleTimeoutMs <= 3_600_000)) throw new TarportError('USAGE', `--idle-timeout ${JSON.stringify(flags.idleTimeout)}: between 100ms and 1h`);
  }
  return {
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(flags.ca ? { ca: flags.ca } : {}),
    ...(flags.identity ? { identity: flags.identity } : {}),
    ...(flags.knownHosts ? { knownHosts: flags.knownHosts } : {}),
    ...(connections ? { connections } : {}),
  };
}

/** Opens a repository; its transport counts requests and bytes for the --json report. */
export async function openRepository(url: string | undefined, flag: string, flags: ConnectionFlags = {}, signal?: AbortSignal): Promise<Repository & { counters: TransportCounters }> {
  if (!url) throw new TarportError('USAGE', `no repository given: pass ${flag} URL (a path, file://, ftp://, ftps:// or sftp://)`);
  const loc = parseLocation(url);
  const counting = new CountingTransport(await openTransport(loc, { ...(await transportOptions(flags)), ...(signal ? { signal } : {}) }));
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

/** The signing function for --sign-key; the passphrase from a file or TARPORT_SIGN_KEY_PASSPHRASE. */
export async function signerFrom(flags: { signKey?: string; signKeyPassphraseFile?: string }): Promise<((data: Buffer) => Promise<Buffer>) | undefined> {
  if (!flags.signKey) return undefined;
  let passphrase = process.env.TARPORT_SIGN_KEY_PASSPHRASE;
  if (flags.signKeyPassphraseFile) {
    passphrase = (await readFile(flags.signKeyPassphraseFile, 'utf8').catch((e: unknown) => {
      throw new TarportError('CONFIG', `--sign-key-passphrase-file ${flags.signKeyPassphraseFile}: ${(e as Error).message}`);
    })).replace(/\r?\n$/, '');
  }
  const key = await loadSigningKey(flags.signKey, passphrase);
  return (data) => signDetached(data, key);
}
