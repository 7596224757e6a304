import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ARCHIVE_KINDS, COMPRESSIONS, LayerWatch, MAX_RATIO, zstdCodecs, zstdNotLoadedNote, type ArchiveKind, type Compression } from '../../archive/index.js';
import { loadRecipients } from '../../crypto/index.js';
import { TarportError } from '../../errors.js';
import { publishArchive, type GrowingArchive, type PublishResult } from '../../producer/index.js';
import { parseRef } from '../../repo/index.js';
import { CATALOG_TTL_BOUNDS, openRepository, signerFrom, type ConnectionFlags, parseDuration, type Context } from '../context.js';
import { humanBytes, type ErrorDocument } from '../output.js';
import { openMetrics, type MetricsFlags } from '../metrics.js';
import { progressLine } from '../progress.js';
import { STDIN_NAME, namedAsStdin, spoolStdin } from '../stdin.js';
import { linkSignals } from '../../signals.js';

export interface PushFlags extends ConnectionFlags, MetricsFlags {
  signKey?: string;
  signKeyPassphraseFile?: string;
  encryptTo?: string[];
  to?: string;
  name?: string;
  compress?: string;
  catalogTtl?: string;
  init?: boolean;
  kind?: string;
  maxExpansion?: string;
}

/** `--max-expansion`: a whole number of times a compressed archive or layer may expand; 0 lifts the limit. */
export function maxExpansionOf(v: string | undefined): number {
  if (v === undefined) return MAX_RATIO;
  if (!/^\d{1,9}$/.test(v.trim())) throw new TarportError('USAGE', `--max-expansion ${JSON.stringify(v)}: a whole number of times (default ${MAX_RATIO}), or 0 for no limit`, { flag: '--max-expansion' });
  return Number(v.trim());
}

/** `--kind`: what the archives are; `auto` (the default) tells an image by its metadata files. */
export function kindOf(v: string | undefined): ArchiveKind {
  const k = (v ?? 'auto') as ArchiveKind;
  if (!ARCHIVE_KINDS.includes(k)) throw new TarportError('USAGE', `--kind ${JSON.stringify(v)}: use auto, image or rootfs`, { flag: '--kind' });
  return k;
}

/**
 * The layer compression: the flag (or its config/environment value), else zstd. Where this Node has
 * no zstd (Node 20 without the optional zstd-napi) the default becomes gzip, with a warning, so that a
 * plain push works on any supported install; an explicit `--compress zstd` still stops with exit 2.
 */
export function compressionOf(v: string | undefined, warn?: (line: string) => void): Compression {
  if (v === undefined && zstdCodecs().length === 0) {
    warn?.(
      `zstd is not available in Node ${process.versions.node}${zstdNotLoadedNote()} (it is built into Node >= 22.15; or install zstd-napi beside tarport): ` +
        'layers are stored gzip-compressed instead; --compress gzip says so without this warning',
    );
    return 'gzip';
  }
  const c = (v ?? 'zstd') as Compression;
  if (!COMPRESSIONS.includes(c)) throw new TarportError('USAGE', `--compress ${JSON.stringify(v)}: use zstd, gzip or none`, { flag: '--compress' });
  return c;
}

export async function pushCommand(ctx: Context, archives: string[], flags: PushFlags): Promise<number> {
  const compression = compressionOf(flags.compress, (l) => ctx.out.warn(l));
  const kind = kindOf(flags.kind);
  const maxExpansion = maxExpansionOf(flags.maxExpansion);
  const name = flags.name ? parseRef(flags.name, { what: '--name', defaultTag: 'latest' }) : undefined;
  const catalogTtlMs = parseDuration(flags.catalogTtl ?? '90d', '--catalog-ttl', CATALOG_TTL_BOUNDS);
  if (name && archives.length > 1) throw new TarportError('USAGE', '--name applies to one archive; push the others separately');
  if (archives.filter((a) => a === '-').length > 1) throw new TarportError('USAGE', `push: - (${STDIN_NAME}) given twice; it holds one archive`);
  const sign = await signerFrom(flags);
  const encryptTo = flags.encryptTo?.length ? await loadRecipients(flags.encryptTo) : undefined;
  const repo = await openRepository(flags.to, '--to', flags, { write: true, signal: ctx.signal, warn: (m) => ctx.out.warn(m), connectEarly: true });
  const sink = await openMetrics(flags, (e) => ctx.out.warn(`metrics not written: ${(e as Error).message}`));
  sink.metrics.oneShot = true;
  // the transport counts an object's bytes when its write ends: the line also counts layers and time
  const progress = await progressLine(ctx.out, 'push', () => repo.counters.bytesWritten);
  const results: PublishResult[] = [];
  const failures: { archive: string; error: ErrorDocument }[] = [];
  // a run stopped by a signal after some archives still says which were pushed (the error's document)
  ctx.out.doneSoFar({ pushed: results, failed: failures });
  let code = 0;
  try {
    for (const a of archives) {
      let r: PublishResult;
      let layers = 0;
      const shown = a === '-' ? STDIN_NAME : a;
      progress.begin(shown);
      try {
        r = await publishFrom(a, (source) => publishArchive(repo, source, {
          compression,
          onEvent: (e) => {
            if (e.kind === 'layer') progress.note(`${++layers} layer(s) stored`);
            else if (e.kind === 'waiting') ctx.out.info(e.message);
          },
          ...(name ? { name } : {}),
          kind,
          maxExpansion,
          catalogTtlMs,
          signal: ctx.signal,
          ...(flags.init ? { create: true } : {}),
          ...(sign ? { sign } : {}),
          ...(encryptTo ? { encryptTo } : {}),
        }), ctx.signal);
      } catch (e) {
        progress.end();
        // one bad archive does not stop the others; the exit code reports the first fault
        if (ctx.signal.aborted) throw e;
        const { exitCode, error } = ctx.out.failure(e);
        sink.metrics.failure(error.code);
        code ||= exitCode;
        failures.push({ archive: a, error });
        continue;
      }
      progress.end();
      results.push(r);
      sink.metrics.observeWatch({ kind: 'published', file: shown, releases: r.releases.map((x) => ({ ref: `${x.name}:${x.tag}`, version: x.version, status: x.status })), uploadedBytes: r.uploadedBytes });
      for (const rel of r.releases) {
        ctx.out.info(
          rel.status === 'published'
            ? `published ${rel.name}:${rel.tag} v${rel.version} (${rel.kind}) from ${shown} to ${repo.location}`
            : `unchanged ${rel.name}:${rel.tag}: identical to v${rel.version}, no new version`,
        );
        if (rel.notServedAsRegistry) ctx.out.warn(`${rel.name}:${rel.tag} is not served to registry clients (docs/mirror.md): ${rel.notServedAsRegistry}`);
      }
      ctx.out.info(`  ${r.uploadedObjects} new object(s), ${humanBytes(r.uploadedBytes)} uploaded`);
      for (const w of r.warnings ?? []) ctx.out.warn(w);
    }
  } finally {
    progress.end();
    sink.metrics.finished(code === 0 && !ctx.signal.aborted);
    await sink.close();
    await repo.close();
  }
  ctx.out.document({ pushed: results, failed: failures, transport: repo.counters });
  return code;
}

/** What to do with a folder given as an archive: an OCI layout (skopeo oci:DIR, podman save --format oci-dir) goes in as a tar of itself. */
async function directoryAdvice(dir: string): Promise<string> {
  const layout = await stat(join(dir, 'oci-layout')).then((s) => s.isFile(), () => false);
  if (!layout) return 'a directory, not an archive (docker save -o FILE, or pipe it into push -)';
  return `an OCI layout directory, not an archive: push it as a tar of its contents (tar -C ${shellWord(dir)} -cf - . | tarport push - --to URL)`;
}

/** `s` as one shell word, quoted only when it needs to be. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Publishes the archive `a`, or standard input when `a` is `-`: that is copied to a file (the
 * archive reader needs one, see stdin.ts), removed once published or refused. While it is copied,
 * a LayerWatch follows it, so that new layers are stored as they come (publishArchive's growing
 * archive). A publish that fails stops the copy. The result names `-`.
 */
async function publishFrom(a: string, publish: (source: string | GrowingArchive) => Promise<PublishResult>, signal: AbortSignal): Promise<PublishResult> {
  if (a !== '-') {
    // a name that names no file is bad input (exit 2), as a bad archive is: a retry cannot help
    const st = await stat(a).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new TarportError('BAD_INPUT', `${a}: no such file`);
      return undefined; // other faults are the archive reader's to name
    });
    if (st?.isDirectory()) throw new TarportError('BAD_INPUT', `${a}: ${await directoryAdvice(a)}`);
    return publish(a);
  }
  const stop = new AbortController();
  const watch = new LayerWatch();
  const link = linkSignals([signal, stop.signal]);
  const spooled = await spoolStdin(link.signal, { tap: (c) => watch.write(c) }).catch((e: unknown) => {
    link.unlink();
    throw e;
  });
  spooled.complete.then(() => watch.end(), () => watch.end());
  try {
    const source = spooled.copied ? { path: spooled.path, complete: spooled.complete, layers: watch.layers(), fault: spooled.fault } : spooled.path;
    const r = await publish(source);
    return { ...r, archive: '-', ...(r.warnings ? { warnings: r.warnings.map((w) => w.replaceAll(spooled.path, STDIN_NAME)) } : {}) };
  } catch (e) {
    throw namedAsStdin(e, spooled);
  } finally {
    stop.abort();
    link.unlink();
    await spooled.complete.catch(() => undefined);
    await spooled.remove();
  }
}
