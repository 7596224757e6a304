import { resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import { loadRecipients } from '../../crypto/index.js';
import { TarportError } from '../../errors.js';
import { nameFor, parseNameRule, publishArchive, watchFolder } from '../../producer/index.js';
import { parseRef } from '../../repo/index.js';
import { CATALOG_TTL_BOUNDS, openRepository, parseDuration, signerFrom, type Context } from '../context.js';
import { describeWatch, eventPrinter, watchLevel } from '../events.js';
import { compressionOf, kindOf, maxExpansionOf, type PushFlags } from './push.js';
import { openMetrics, type MetricsFlags } from '../metrics.js';
import { VERSION } from '../../version.js';

export interface WatchFlags extends PushFlags, MetricsFlags {
  once?: boolean;
  settle?: string;
  giveUp?: string;
  nameMap?: string[];
  removeDone?: boolean;
}

/** The producer agent: publish what lands in DIR (CLI.md `watch`). */
export async function watchCommand(ctx: Context, dirArg: string, flags: WatchFlags): Promise<number> {
  const dir = resolve(dirArg);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new TarportError('USAGE', `${dir}: not a folder to watch`);
  const compression = compressionOf(flags.compress, (l) => ctx.out.warn(l));
  const kind = kindOf(flags.kind);
  const maxExpansion = maxExpansionOf(flags.maxExpansion);
  const fixed = flags.name ? parseRef(flags.name, { what: '--name', defaultTag: 'latest' }) : undefined;
  const rules = (flags.nameMap ?? []).map(parseNameRule);
  const catalogTtlMs = parseDuration(flags.catalogTtl ?? '90d', '--catalog-ttl', CATALOG_TTL_BOUNDS);
  const settleMs = parseDuration(flags.settle ?? '5s', '--settle');
  const giveUpMs = parseDuration(flags.giveUp ?? '10m', '--give-up');
  const sign = await signerFrom(flags);
  const encryptTo = flags.encryptTo?.length ? await loadRecipients(flags.encryptTo) : undefined;
  const repo = await openRepository(flags.to, '--to', flags, { write: true, signal: ctx.signal, warn: (m) => ctx.out.warn(m) });
  const print = await eventPrinter(ctx.out, describeWatch, watchLevel);
  const sink = await openMetrics(flags, (e) => ctx.out.warn(`metrics not written: ${(e as Error).message}`));
  try {
    print({ kind: 'started', agent: 'watch', version: VERSION, repository: repo.location, interval: flags.settle ?? '5s', subscriptions: [dir] });
    const summary = await watchFolder({
      dir,
      settleMs,
      giveUpMs,
      once: flags.once ?? false,
      removeDone: flags.removeDone ?? false,
      signal: ctx.signal,
      onEvent: (e) => {
        print(e);
        sink.metrics.observeWatch(e);
        void sink.update();
      },
      nameFor: async (p) => fixed ?? (await nameFor(p, rules)),
      publish: (p, name, signal) =>
        publishArchive(repo, p, {
          compression,
          kind,
          maxExpansion,
          catalogTtlMs,
          signal,
          onEvent: (e) => void (e.kind === 'waiting' && ctx.out.info(e.message)),
          ...(flags.init ? { create: true } : {}),
          ...(name ? { name } : {}),
          ...(sign ? { sign } : {}),
          ...(encryptTo ? { encryptTo } : {}),
        }),
    });
    if (!flags.once) return 0;
    // a pass over the folder is a run of its own: its end counts as a poll, a clean one as a success
    sink.metrics.finished(summary.exitCode === 0);
    return summary.exitCode;
  } finally {
    await sink.close();
    await repo.close();
  }
}
