import { homedir } from 'node:os';
import { join } from 'node:path';
import { TarportError } from '../errors.js';
import { loadSigningKey, madeBy, signDetached } from '../crypto/index.js';
import { Repository, type Sign } from '../repo/index.js';
import { readFile, stat } from 'node:fs/promises';
import { CountingTransport, openTransport, parseLocation, type Transport, type TransportCounters, type TransportOptions } from '../transport/index.js';
import type { Output } from './output.js';
import { envName } from './config.js';

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
  s3Endpoint?: string;
  s3Region?: string;
  s3PathStyle?: boolean;
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
    connections = wholeNumber(flags.connections);
    if (!Number.isInteger(connections) || connections < 1 || connections > 16) throw new TarportError('USAGE', `--connections ${JSON.stringify(flags.connections)}: a whole number from 1 to 16`, { flag: '--connections' });
  }
  const env = process.env;
  const httpsProxy = env.HTTPS_PROXY ?? env.https_proxy;
  const httpProxy = env.HTTP_PROXY ?? env.http_proxy;
  const noProxy = env.NO_PROXY ?? env.no_proxy;
  let idleTimeoutMs: number | undefined;
  if (flags.idleTimeout !== undefined) {
    idleTimeoutMs = parseDuration(flags.idleTimeout, '--idle-timeout');
    if (!(idleTimeoutMs >= 100 && idleTimeoutMs <= 3_600_000)) throw new TarportError('USAGE', `--idle-timeout ${JSON.stringify(flags.idleTimeout)}: between 100ms and 1h`, { flag: '--idle-timeout' });
  }
  return {
    ...s3Options(flags),
    ...(httpsProxy || httpProxy ? { proxy: { ...(httpsProxy ? { httpsProxy } : {}), ...(httpProxy ? { httpProxy } : {}), ...(noProxy ? { noProxy } : {}) } } : {}),
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(flags.ca ? { ca: flags.ca } : {}),
    ...(flags.identity ? { identity: flags.identity } : {}),
    ...(flags.knownHosts ? { knownHosts: flags.knownHosts } : {}),
    ...(connections ? { connections } : {}),
  };
}

/**
 * S3 settings: flags (and their config keys and TARPORT_ variables) first, then the AWS SDK's own
 * variables (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION). Credentials are
 * never flags: the SDK's chain reads them (environment, shared files).
 */
function s3Options(flags: ConnectionFlags): Pick<TransportOptions, 's3'> {
  const env = process.env;
  const endpoint = flags.s3Endpoint ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  if (endpoint !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(endpoint)) {
    throw new TarportError('USAGE', `--s3-endpoint ${JSON.stringify(endpoint)}: expected http(s)://HOST[:PORT], the S3 server without a path (the bucket goes in the s3:// location)`, { flag: '--s3-endpoint' });
  }
  const region = flags.s3Region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  if (region !== undefined && !/^[a-z0-9-]{1,40}$/.test(region)) throw new TarportError('USAGE', `--s3-region ${JSON.stringify(region)}: expected a region name such as us-east-1`, { flag: '--s3-region' });
  // tarport ships a fixed SDK version (bundled), so the SDK's notice about its future Node support
  // is no news for a tarport user: every run on Node 20 would print it
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // a multipart upload a killed run left is resumed by the next from this host's state folder
  const journalDir = join(defaultStateDir(), 's3-uploads');
  return { s3: { ...(endpoint ? { endpoint } : {}), ...(region ? { region } : {}), ...(flags.s3PathStyle !== undefined ? { pathStyle: flags.s3PathStyle } : {}), journalDir } };
}

/**
 * Opens a repository; its transport counts requests and bytes for the --json report. A command that
 * writes (`write: true`) is refused before it starts when the location is read-only (a web mirror).
 * `signal` (the command's: SIGTERM, SIGINT) drops every connection at once when it fires.
 */
export async function openRepository(url: string | undefined, flag: string, flags: ConnectionFlags = {}, opts: { write?: boolean; signal?: AbortSignal; warn?: (message: string) => void; connectEarly?: boolean } = {}): Promise<Repository & { counters: TransportCounters; beside: Transport }> {
  if (!url) throw new TarportError('USAGE', `no repository given: pass ${flag} URL (a path, file://, ftp://, ftps://, sftp://, http://, https:// or s3://)`);
  const loc = parseLocation(url);
  // a file where the repository's folder should be (`--to app.tar`): the flag's fault, said so, not a
  // system error from deep in the first read (ENOTDIR)
  if (loc.kind === 'file' && (await stat(loc.path).then((s) => !s.isDirectory(), () => false))) {
    throw new TarportError('USAGE', `${flag} ${loc.path}: a file, not a folder; a repository is a folder (tarport init creates one)`);
  }
  const topts = await transportOptions(flags);
  const warn = opts.warn;
  const s3 = topts.s3 && warn ? { s3: { ...topts.s3, onJournalFault: warn } } : {};
  const transport = await openTransport(loc, { ...topts, ...s3, ...(opts.signal ? { signal: opts.signal } : {}) });
  if (opts.write && transport.capabilities.readOnly) {
    await transport.close();
    throw new TarportError('USAGE', `${flag} ${transport.location}: ${loc.kind}:// locations are read-only (a web mirror serves what an origin publishes); write to the origin instead`);
  }
  const counting = new CountingTransport(transport);
  // the handshake runs while the command does its local work (Transport.connectEarly)
  if (opts.connectEarly) counting.connectEarly();
  // `beside`: the same location for files that are not the repository's own (the tool that
  // `sync --with-tool` carries, src/sync/tool.ts); repo/ never reads or writes them
  return Object.assign(new Repository(counting), { counters: counting.counters, beside: counting as Transport });
}

export function defaultStateDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/tarport';
  const base = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'tarport');
}

/** A count flag's value: decimal digits only (`Number` would take 0x2, 1e1 and " "), else NaN for the caller's message. */
export function wholeNumber(v: string | number): number {
  const s = String(v).trim();
  return /^\d{1,15}$/.test(s) ? Number(s) : NaN;
}

const DAY_MS = 86_400_000;
/** The longest wait tarport asks a timer for: Node fires a longer one (over 2^31 - 1 ms) at once, and an agent would loop. */
export const MAX_WAIT_MS = 24 * DAY_MS;
/**
 * How long a catalog may stay valid (`--catalog-ttl`): 0 is not "for ever" (a catalog of 0 expires as
 * it is written), and past 100 years the date is no date a reader takes.
 */
export const CATALOG_TTL_BOUNDS = { min: 1, max: 36_500 * DAY_MS, say: 'more than 0 (it is not "no expiry": a catalog of 0 expires as it is written) and at most 36500d (100 years)' };

/**
 * A duration flag, in ms, within `bounds` (by default, what a timer can wait: at most 24 days). A
 * value past them is refused, not clamped: a catalog that expires as it is written, or an interval
 * Node's timers take for none, would fail far from the flag.
 */
export function parseDuration(s: string, what: string, bounds: { min?: number; max?: number; say?: string } = {}): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(s.trim());
  if (!m) throw new TarportError('USAGE', `${what} ${JSON.stringify(s)}: expected a duration such as 30s, 5m, 12h or 90d`, { flag: what });
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  const ms = n * unit;
  const { min = 0, max = MAX_WAIT_MS, say = 'at most 24d (the longest a timer waits)' } = bounds;
  if (!(ms >= min && ms <= max)) throw new TarportError('USAGE', `${what} ${JSON.stringify(s)}: ${say}`, { flag: what });
  return ms;
}

/** The signing function for --sign-key; the passphrase from a file or TARPORT_SIGN_KEY_PASSPHRASE. */
export async function signerFrom(flags: { signKey?: string; signKeyPassphraseFile?: string }): Promise<Sign | undefined> {
  if (!flags.signKey) return undefined;
  let passphrase = process.env.TARPORT_SIGN_KEY_PASSPHRASE;
  if (flags.signKeyPassphraseFile) {
    passphrase = (await readFile(flags.signKeyPassphraseFile, 'utf8').catch((e: unknown) => {
      throw new TarportError('CONFIG', `--sign-key-passphrase-file ${flags.signKeyPassphraseFile}: ${(e as Error).message}`);
    })).replace(/\r?\n$/, '');
  }
  const key = await loadSigningKey(flags.signKey, passphrase);
  return Object.assign((data: Buffer) => signDetached(data, key), { fingerprint: key.signsAs, verifies: (data: Buffer, signature: Buffer) => madeBy(data, signature, key) });
}

/**
 * A flag under its new name or its deprecated one (docs/cli.md keeps the old one working): the old one
 * says so on stderr; both at once with different values is a usage error.
 */
export function deprecatedAlias(ctx: Context, current: { name: string; value: string | undefined }, old: { name: string; env: string; value: string | undefined }): string | undefined {
  if (old.value === undefined) return current.value;
  if (current.value !== undefined && current.value !== old.value) {
    throw new TarportError('USAGE', `${current.name} ${JSON.stringify(current.value)} and ${old.name} ${JSON.stringify(old.value)} disagree; ${old.name} is the deprecated name of ${current.name}: give only ${current.name}`);
  }
  ctx.out.warn(`${old.name} (and ${old.env}) is deprecated: use ${current.name} (${envName(current.name)}), which means the same thing for every command`);
  return old.value;
}
