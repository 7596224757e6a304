import { loadTrustedKeys, verifyDetached } from '../../crypto/index.js';
import { TarportError } from '../../errors.js';
import { checkRepository, collectGarbage, repairRepository } from '../../repo/index.js';
import { CATALOG_TTL_BOUNDS, openRepository, parseDuration, wholeNumber, signerFrom, type ConnectionFlags, type Context } from '../context.js';
import { EXIT, exitCodeOf, humanBytes } from '../output.js';

export interface CheckFlags extends ConnectionFlags {
  trust?: string[];
}

/** `tarport check URL`: every record, signature and object digest; exit 3 on any fault. */
export async function checkCommand(ctx: Context, url: string, flags: CheckFlags): Promise<number> {
  const trust = flags.trust?.length ? await loadTrustedKeys(flags.trust) : undefined;
  const repo = await openRepository(url, 'URL', flags, { signal: ctx.signal });
  let found = 0;
  try {
    const r = await checkRepository(repo, {
      signal: ctx.signal,
      ...(trust ? { verify: (data: Buffer, sig: Buffer | undefined, what: string) => verifyDetached(data, sig, trust, what) } : {}),
      // errors, shown under --quiet too, as they are found: a check that exits 3 says why, and one
      // that a dropped link ends (exit 1) has said what it found before
      onFault: (f) => {
        found++;
        ctx.out.line('error', `fault: ${f.what}: ${f.problem}`);
      },
    });
    for (const w of r.warnings) ctx.out.warn(`${w.what}: ${w.problem}`);
    ctx.out.info(`${repo.location}: ${r.releases} release(s), ${r.objects} object(s), ${humanBytes(r.bytes)} checked${trust ? ', signatures verified' : ''}; ${r.faults.length} fault(s)`);
    ctx.out.document({ repository: repo.location, ...r });
    return r.faults.length > 0 ? EXIT.trust : EXIT.ok;
  } catch (e) {
    // the way to the repository failed part-way (docs/cli.md): say what was left unchecked
    const code = (e as { code?: string }).code;
    if (found > 0 || code === 'CONNECTION' || code === 'IO') {
      ctx.out.line('error', `the check ended early, ${found > 0 ? `after ${found} fault(s) listed above` : 'before it found any fault'}; the rest of the repository was not checked`);
    }
    throw e;
  } finally {
    await repo.close();
  }
}

export interface GcFlags extends ConnectionFlags {
  keep?: string;
  dryRun?: boolean;
  grace?: string;
}

/** `tarport gc URL --keep N`: old versions and unreferenced objects go. */
export async function gcCommand(ctx: Context, url: string, flags: GcFlags): Promise<number> {
  const keep = flags.keep === undefined ? NaN : wholeNumber(flags.keep);
  if (flags.keep === undefined || !Number.isInteger(keep) || keep < 1) throw new TarportError('USAGE', `--keep ${JSON.stringify(flags.keep ?? '')}: how many versions per tag to keep, 1 or more`, { flag: '--keep' });
  const graceMs = parseDuration(flags.grace ?? '1h', '--grace', { max: CATALOG_TTL_BOUNDS.max, say: 'at most 36500d (100 years)' });
  const repo = await openRepository(url, 'URL', flags, { write: !flags.dryRun, signal: ctx.signal });
  try {
    const r = await collectGarbage(repo, { keep, dryRun: flags.dryRun ?? false, graceMs, signal: ctx.signal });
    const verb = flags.dryRun ? 'would remove' : 'removed';
    for (const x of r.releasesRemoved) ctx.out.info(`${verb} release ${x}`);
    for (const x of r.temporaryRemoved) ctx.out.info(`${verb} temporary file ${x}`);
    for (const x of r.housekeeping) ctx.out.info(`${verb} ${x}`);
    if (r.objectsSpared.length) ctx.out.info(`kept ${r.objectsSpared.length} unreferenced object(s): a publish under way named them`);
    if (r.objectsLeft) ctx.out.warn(`${r.objectsLeft} unreferenced object(s) left for the next gc: its deletion window ended`);
    ctx.out.info(`${verb} ${r.releasesRemoved.length} release(s) and ${r.objectsRemoved.length} object(s), ${humanBytes(r.bytesFreed)}`);
    // a damaged record is a fault of the repository: said, and the exit code of one (3)
    for (const x of r.tagsKept ?? []) ctx.out.failure(new TarportError('INTEGRITY', x));
    ctx.out.document({ repository: repo.location, dryRun: flags.dryRun ?? false, ...r });
    return r.tagsKept?.length ? exitCodeOf('INTEGRITY') : 0;
  } finally {
    await repo.close();
  }
}

/** `tarport init URL`: a repository with its identity. */
export async function initCommand(ctx: Context, url: string, flags: ConnectionFlags): Promise<number> {
  const repo = await openRepository(url, 'URL', flags, { write: true, signal: ctx.signal });
  try {
    const { id, created } = await repo.init(ctx.signal);
    ctx.out.info(created ? `created tarport repository ${repo.location} (id ${id})` : `${repo.location} is a tarport repository already (id ${id})`);
    ctx.out.document({ repository: repo.location, id, created });
    return EXIT.ok;
  } finally {
    await repo.close();
  }
}

export interface RepairFlags extends ConnectionFlags {
  signKey?: string;
  signKeyPassphraseFile?: string;
  catalogTtl?: string;
}

/** `tarport repair URL`: the catalog rebuilt from releases/; exit 3 when something needs the signing key. */
export async function repairCommand(ctx: Context, url: string, flags: RepairFlags): Promise<number> {
  const sign = await signerFrom(flags);
  const ttlMs = parseDuration(flags.catalogTtl ?? '90d', '--catalog-ttl', CATALOG_TTL_BOUNDS);
  const repo = await openRepository(url, 'URL', flags, { write: true, signal: ctx.signal });
  try {
    const r = await repairRepository(repo, { ttlMs, ...(sign ? { sign } : {}), signal: ctx.signal });
    for (const x of r.repaired) ctx.out.info(`repaired: ${x}`);
    for (const x of r.needsKey) ctx.out.warn(`needs the signing key: ${x}`);
    if (r.repaired.length === 0 && r.needsKey.length === 0) ctx.out.info(`${repo.location}: nothing to repair`);
    ctx.out.document({ repository: repo.location, ...r });
    return r.needsKey.length > 0 ? EXIT.trust : EXIT.ok;
  } finally {
    await repo.close();
  }
}
