import { resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import { loadRecipients } from '../../crypto/index.js';
import { TarportError } from '../../errors.js';
import { nameFor, parseNameRule, publishArchive, watchFolder } from '../../producer/index.js';
import { parseRef } from '../../repo/index.js';
import { openRepository, parseDuration, signerFrom, type Context } from '../context.js';
import { describeWatch, eventPrinter, watchLevel } from '../events.js';
import { compressionOf, type PushFlags } from './push.js';

export interface WatchFlags extends PushFlags {
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
  const compression = compressionOf(flags.compress);
  const fixed = flags.name ? parseRef(flags.name, { what: '--name', defaultTag: 'latest' }) : undefined;
  const rules = (flags.nameMap ?? []).map(parseNameRule);
  const catalogTtlMs = parseDuration(flags.catalogTtl ?? '90d', '--catalog-ttl');
  const settleMs = parseDuration(flags.settle ?? '5s', '--settle');
  const giveUpMs = parseDuration(flags.giveUp ?? '10m', '--give-up');
  const sign = await signerFrom(flags);
  const encryptTo = flags.encryptTo?.length ? await loadRecipients(flags.encryptTo) : undefined;
  const repo = await openRepository(flags.to, '--to', flags, ctx.signal);
  const print = await eventPrinter(ctx.out.json, ctx.out.quiet, describeWatch, watchLevel);
  try {
    const summary = await watchFolder({
      dir,
      settleMs,
      giveUpMs,
      once: flags.once ?? false,
      removeDone: flags.removeDone ?? false,
      signal: ctx.signal,
      onEvent: print,
      nameFor: async (p) => fixed ?? (await nameFor(p, rules)),
      publish: (p, name, signal) => publishArchive(repo, p, { compression, catalogTtlMs, signal, ...(name ? { name } : {}), ...(sign ? { sign } : {}), ...(encryptTo ? { encryptTo } : {}) }),
    });
    return flags.once ? summary.exitCode : 0;
  } finally {
    await repo.transport.close();
  }
}
