import { poll, pull, type Subscription } from '../../consumer/index.js';
import { loadDecryptionKey, loadTrustedKeys } from '../../crypto/index.js';
import { DockerClient } from '../../docker/index.js';
import { TarportError, isTarportError } from '../../errors.js';
import { validateName, validateTag } from '../../repo/index.js';
import { defaultStateDir, openRepository, parseDuration, type ConnectionFlags, type Context } from '../context.js';
import { describe, eventPrinter, pollLevel } from '../events.js';

export interface PullFlags extends ConnectionFlags {
  from?: string;
  state?: string;
  allowExpired?: boolean;
  hook?: string;
  keepImages?: string;
  trust?: string[];
  decryptKey?: string;
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

async function consumerOptions(names: string[], flags: PullFlags) {
  let keepImages: number | undefined;
  if (flags.keepImages !== undefined) {
    keepImages = Number(flags.keepImages);
    if (!Number.isInteger(keepImages) || keepImages < 0) throw new TarportError('USAGE', `--keep-images ${JSON.stringify(flags.keepImages)}: a whole number, 0 or more`);
  }
  return {
    subscriptions: parseSubscriptions(names),
    stateDir: flags.state ?? defaultStateDir(),
    allowExpired: flags.allowExpired ?? false,
    ...(flags.hook ? { hook: flags.hook } : {}),
    ...(keepImages !== undefined ? { keepImages } : {}),
    ...(flags.trust?.length ? { trust: await loadTrustedKeys(flags.trust) } : {}),
    ...(flags.decryptKey ? { decryptKey: await loadDecryptionKey(flags.decryptKey, process.env.TARPORT_DECRYPT_KEY_PASSPHRASE) } : {}),
  };
}

export async function pullCommand(ctx: Context, names: string[], flags: PullFlags): Promise<number> {
  const options = await consumerOptions(names, flags);
  const repo = await openRepository(flags.from, '--from', flags, ctx.signal);
  try {
    const r = await pull(repo, new DockerClient(), {
      ...options,
      signal: ctx.signal,
      onEvent: (e) => {
        if (e.kind === 'warning') ctx.out.warn(e.message);
        else if (e.kind !== 'idle') ctx.out.info(describe(e));
      },
    });
    ctx.out.document({ ...r, transport: repo.counters });
    return 0;
  } catch (e) {
    if (isTarportError(e, 'LOCKED')) {
      // an overlapping cron run: the one at work picks up anything new
      ctx.out.info(e.message);
      ctx.out.document({ locked: true, message: e.message });
      return 0;
    }
    throw e;
  } finally {
    await repo.transport.close();
  }
}

/** The consumer agent: `pull` every --interval until SIGTERM or SIGINT. */
export async function pollCommand(ctx: Context, names: string[], flags: PollFlags): Promise<number> {
  const options = await consumerOptions(names, flags);
  const intervalMs = parseDuration(flags.interval ?? '60s', '--interval');
  if (intervalMs < 100) throw new TarportError('USAGE', `--interval ${flags.interval}: at least 100ms`);
  const repo = await openRepository(flags.from, '--from', flags, ctx.signal);
  const print = await eventPrinter(ctx.out.json, ctx.out.quiet, describe, pollLevel);
  try {
    await poll(repo, new DockerClient(), { ...options, intervalMs, signal: ctx.signal, onEvent: print });
  } finally {
    await repo.transport.close();
  }
  return 0;
}
