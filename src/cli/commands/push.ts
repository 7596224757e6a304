import { COMPRESSIONS, type Compression } from '../../archive/index.js';
import { loadRecipients } from '../../crypto/index.js';
import { TarportError } from '../../errors.js';
import { publishArchive, type PublishResult } from '../../producer/index.js';
import { parseRef } from '../../repo/index.js';
import { openRepository, signerFrom, type ConnectionFlags, parseDuration, type Context } from '../context.js';
import { humanBytes } from '../output.js';

export interface PushFlags extends ConnectionFlags {
  signKey?: string;
  signKeyPassphraseFile?: string;
  encryptTo?: string[];
  to?: string;
  name?: string;
  compress?: string;
  catalogTtl?: string;
}

export function compressionOf(v: string | undefined): Compression {
  const c = (v ?? 'zstd') as Compression;
  if (!COMPRESSIONS.includes(c)) throw new TarportError('USAGE', `--compress ${JSON.stringify(v)}: use zstd, gzip or none`);
  return c;
}

export async function pushCommand(ctx: Context, archives: string[], flags: PushFlags): Promise<number> {
  const compression = compressionOf(flags.compress);
  const name = flags.name ? parseRef(flags.name, { what: '--name', defaultTag: 'latest' }) : undefined;
  const catalogTtlMs = parseDuration(flags.catalogTtl ?? '90d', '--catalog-ttl');
  if (name && archives.length > 1) throw new TarportError('USAGE', '--name applies to one archive; push the others separately');
  const sign = await signerFrom(flags);
  const encryptTo = flags.encryptTo?.length ? await loadRecipients(flags.encryptTo) : undefined;
  const repo = await openRepository(flags.to, '--to', flags, ctx.signal);
  const results: PublishResult[] = [];
  const failures: { archive: string; error: unknown }[] = [];
  let code = 0;
  try {
    for (const a of archives) {
      let r: PublishResult;
      try {
        r = await publishArchive(repo, a, {
          compression,
          ...(name ? { name } : {}),
          catalogTtlMs,
          signal: ctx.signal,
          ...(sign ? { sign } : {}),
          ...(encryptTo ? { encryptTo } : {}),
        });
      } catch (e) {
        // one bad archive does not stop the others; the exit code reports the first fault
        if (ctx.signal.aborted) throw e;
        const c = ctx.out.error(e);
        code ||= c;
        failures.push({ archive: a, error: e instanceof Error ? e.message : String(e) });
        continue;
      }
      results.push(r);
      for (const rel of r.releases) {
        ctx.out.info(
          rel.status === 'published'
            ? `published ${rel.name}:${rel.tag} v${rel.version} (${rel.kind}) from ${a} to ${repo.location}`
            : `unchanged ${rel.name}:${rel.tag}: identical to v${rel.version}, no new version`,
        );
      }
      ctx.out.info(`  ${r.uploadedObjects} new object(s), ${humanBytes(r.uploadedBytes)} uploaded`);
    }
  } finally {
    await repo.transport.close();
  }
  ctx.out.document({ pushed: results, failed: failures, transport: repo.counters });
  return code;
}
