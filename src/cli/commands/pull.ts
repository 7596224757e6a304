import { poll, pull, unauthenticatedWarning, type Subscription } from '../../consumer/index.js';
import { loadDecryptionKey, loadTrustedKeys } from '../../crypto/index.js';
import { TarportError, isTarportError, type ErrorCode } from '../../errors.js';
import { exitCodeOf } from '../output.js';
import { openMetrics, type MetricsFlags } from '../metrics.js';
import { progressLine } from '../progress.js';
import { VERSION } from '../../version.js';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { HOST_ID_RE, normalizePlatform, parsePlatform, validateName, validateTag, type RecordPlatform } from '../../repo/index.js';
import { defaultStateDir, openRepository, parseDuration, wholeNumber, type ConnectionFlags, type Context } from '../context.js';
import { describe, eventPrinter, pollLevel } from '../events.js';
import { openRuntime, type RuntimeFlags } from '../runtime.js';

export interface PullFlags extends ConnectionFlags, RuntimeFlags, MetricsFlags {
  from?: string;
  state?: string;
  allowExpired?: boolean;
  hook?: string;
  keepImages?: string;
  trust?: string[];
  decryptKey?: string;
  allowUnencrypted?: boolean;
  fetchOnly?: boolean;
  platform?: string;
  ack?: boolean;
  hostId?: string;
}

export interface PollFlags extends PullFlags {
  interval?: string;
}

export function parseSubscriptions(args: string[]): Subscription[] {
  return args.map((a) => {
    if (a.includes('@')) throw new TarportError('USAGE', `${JSON.stringify(a)}: follow NAME or NAME:TAG`);
    const slash = a.lastIndexOf('/');
    const colon = a.lastIndexOf(':');
    if (colon > slash) return { name: validateName(a.slice(0, colon)), tag: validateTag(a.slice(colon + 1)) };
    return { name: validateName(a) };
  });
}

/** `--platform`, as containerd spells it: what the state keeps, a root file system is made for, and the lines say. */
export function platformFlag(value: string): RecordPlatform {
  return normalizePlatform(parsePlatform(value));
}

async function consumerOptions(names: string[], flags: PullFlags) {
  let keepImages: number | undefined;
  if (flags.keepImages !== undefined) {
    keepImages = wholeNumber(flags.keepImages);
    if (!Number.isInteger(keepImages) || keepImages < 0) throw new TarportError('USAGE', `--keep-images ${JSON.stringify(flags.keepImages)}: a whole number, 0 or more`, { flag: '--keep-images' });
  }
  return {
    subscriptions: parseSubscriptions(names),
    stateDir: flags.state ?? defaultStateDir(),
    allowExpired: flags.allowExpired ?? false,
    ...(flags.hook ? { hook: flags.hook } : {}),
    ...(keepImages !== undefined ? { keepImages } : {}),
    ...(flags.trust?.length ? { trust: await loadTrustedKeys(flags.trust) } : {}),
    ...(flags.fetchOnly ? { fetchOnly: true } : {}),
    ...(flags.platform ? { platform: platformFlag(flags.platform) } : {}),
    ...(flags.decryptKey ? { decryptKey: await loadDecryptionKey(flags.decryptKey, process.env.TARPORT_DECRYPT_KEY_PASSPHRASE) } : {}),
    allowUnencrypted: flags.allowUnencrypted ?? false,
    ...(flags.ack === false ? {} : { ack: { ...(await hostIdentity(flags.hostId)), timeoutMs: ACK_TIMEOUT_MS } }),
  };
}

/** An acknowledgement is a courtesy: it may cost a pull this long at most (a slow or stalled server). */
const ACK_TIMEOUT_MS = 5_000;

/**
 * This host in acknowledgements: --host-id, else the first 16 hex digits of SHA-256 over
 * "tarport:" and /etc/machine-id (machine-id(5): hand out an application-specific hash, never the id
 * itself), else of the hostname. The hostname goes beside it for people to read.
 */
export async function hostIdentity(flag: string | undefined): Promise<{ id: string; hostname: string }> {
  const hostname = osHostname().replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 255) || 'unnamed';
  if (flag !== undefined) {
    if (!HOST_ID_RE.test(flag)) throw new TarportError('USAGE', `--host-id ${JSON.stringify(flag)}: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`, { flag: '--host-id' });
    return { id: flag, hostname };
  }
  const machineId = (await readFile('/etc/machine-id', 'utf8').catch(() => '')).trim();
  return { id: createHash('sha256').update(`tarport:${machineId || hostname}`).digest('hex').slice(0, 16), hostname };
}

export async function pullCommand(ctx: Context, names: string[], flags: PullFlags): Promise<number> {
  const options = await consumerOptions(names, flags);
  const warnings = [unauthenticatedWarning(options)].filter((w) => w !== undefined);
  for (const w of warnings) ctx.out.warn(w);
  const repo = await openRepository(flags.from, '--from', flags, { signal: ctx.signal, connectEarly: true });
  const sink = await openMetrics(flags, (e) => ctx.out.warn(`metrics not written: ${(e as Error).message}`));
  sink.metrics.oneShot = true;
  const progress = await progressLine(ctx.out, 'pull', () => repo.counters.bytesRead);
  let ok = false;
  const hooks: { ref: string; version: number; ok: boolean; message: string }[] = [];
  // what was done before an error ends the run, for its document
  const soFar = {
    loaded: [] as { ref: string; version: number; imageId: string }[],
    upToDate: [] as string[],
    refused: [] as { ref: string; digest: string; code: string; message: string }[],
    ...(flags.fetchOnly ? { fetched: [] as { ref: string; version: number }[] } : {}),
  };
  ctx.out.doneSoFar(soFar);
  try {
    // a refused release does not hide the ones that loaded: both go into the one report
    const r = await pull(repo, openRuntime(flags), {
      ...options,
      throwOnRefused: false,
      signal: ctx.signal,
      onEvent: (e) => {
        sink.metrics.observePoll(e);
        if (e.kind === 'loaded') soFar.loaded.push({ ref: e.ref, version: e.version, imageId: e.imageId });
        else if (e.kind === 'up-to-date') soFar.upToDate.push(e.ref);
        else if (e.kind === 'refused') soFar.refused.push({ ref: e.ref, digest: e.digest, code: e.code, message: e.message });
        else if (e.kind === 'fetched') soFar.fetched?.push({ ref: e.ref, version: e.version });
        if (e.kind === 'loading') {
          ctx.out.info(describe(e));
          return progress.begin(`${e.ref} v${e.version}`);
        }
        progress.end();
        if (e.kind === 'warning') ctx.out.warn(e.message);
        else if (e.kind === 'ack') ctx.out.line(e.readOnly ? 'debug' : 'info', e.message);
        else if (e.kind === 'refused') ctx.out.failure(new TarportError(e.code as ErrorCode, `refused ${e.ref} v${e.version}: ${e.message}`));
        // a failed hook is a warning (the service may still run the old image), never info alone
        else if (pollLevel(e) !== 'debug') ctx.out.line(pollLevel(e), describe(e));
        if (e.kind === 'hook') hooks.push({ ref: e.ref, version: e.version, ok: e.ok, message: e.message });
      },
    });
    ctx.out.document({ ...r, ...(hooks.length ? { hooks } : {}), transport: repo.counters, ...(warnings.length ? { warnings } : {}) });
    const first = r.refused[0];
    ok = !first;
    return first ? exitCodeOf(first.code as ErrorCode) : 0;
  } catch (e) {
    if (isTarportError(e, 'LOCKED')) {
      // an overlapping cron run: the one at work picks up anything new
      ctx.out.info(e.message);
      ctx.out.document({ loaded: [], upToDate: [], refused: [], ...(flags.fetchOnly ? { fetched: [] } : {}), locked: true, message: e.message });
      return 0;
    }
    sink.metrics.failure(e instanceof TarportError ? e.code : 'INTERNAL');
    throw e;
  } finally {
    progress.end();
    sink.metrics.finished(ok);
    await sink.close();
    await repo.close();
  }
}

/** The consumer agent: `pull` every --interval until SIGTERM or SIGINT. */
export async function pollCommand(ctx: Context, names: string[], flags: PollFlags): Promise<number> {
  const options = await consumerOptions(names, flags);
  const interval = flags.interval ?? '60s';
  const intervalMs = parseDuration(interval, '--interval');
  if (intervalMs < 100) throw new TarportError('USAGE', `--interval ${flags.interval}: at least 100ms`, { flag: '--interval' });
  const repo = await openRepository(flags.from, '--from', flags, { signal: ctx.signal });
  const print = await eventPrinter(ctx.out, describe, pollLevel);
  const sink = await openMetrics(flags, (e) => ctx.out.warn(`metrics not written: ${(e as Error).message}`));
  try {
    print({ kind: 'started', agent: 'poll', version: VERSION, repository: repo.location, interval, subscriptions: names });
    const warning = unauthenticatedWarning(options);
    if (warning) print({ kind: 'warning', message: warning });
    await poll(repo, openRuntime(flags), {
      ...options,
      intervalMs,
      signal: ctx.signal,
      onEvent: (e) => {
        // a round's end is for the metrics: under --json it would be a line per poll saying nothing new
        if (e.kind !== 'round') print(e);
        sink.metrics.observePoll(e);
        void sink.update();
      },
    });
  } finally {
    await sink.close();
    await repo.close();
  }
  return 0;
}
