import { TarportError, isRefusalCode } from '../../errors.js';
import { unreadableRecord, type Ack, type ReleaseMember, type ReleaseSummary, type ReleaseRef, type Repository } from '../../repo/index.js';
import { ListingUnavailableError } from '../../transport/index.js';
import { openRepository, type ConnectionFlags, type Context } from '../context.js';
import { EXIT, humanBytes, table } from '../output.js';

export interface LsFlags extends ConnectionFlags {
  latest?: boolean;
}

/** One row of `ls` (and of `ls --json`'s releases). */
export type ListedRelease = Omit<ReleaseSummary, 'record' | 'members'> & {
  /** A multi-platform release's members (platform images, attestations, absent platforms); empty otherwise. */
  platforms: ReleaseMember[];
};

/** One release as ls and log show it, read through the repository's public readers. */
export async function describeRelease(repo: Repository, ref: ReleaseRef, current: ReadonlySet<string>, acks: readonly Ack[], signal: AbortSignal): Promise<ListedRelease> {
  const r = await repo.describeRelease(ref, current, acks, signal);
  // the order of `ls --json`'s fields, as before the description moved to repo/
  return { name: r.name, tag: r.tag, version: r.version, kind: r.kind, size: r.size, created: r.created, signer: r.signer, signerUserId: r.signerUserId, encrypted: r.encrypted, current: r.current, digest: r.digest, platforms: r.members, hosts: r.hosts };
}

/** The PLATFORMS column: `linux/amd64,linux/arm64 +1 attestation-manifest +1 absent`, or `-`. */
export function membersColumn(members: readonly ReleaseMember[]): string {
  if (members.length === 0) return '-';
  const images = members.filter((m) => m.state === 'image').map((m) => m.platform);
  const counts = new Map<string, number>();
  for (const m of members) if (m.state !== 'image') counts.set(m.state === 'absent' ? 'absent' : (m.type ?? 'artifact'), (counts.get(m.state === 'absent' ? 'absent' : (m.type ?? 'artifact')) ?? 0) + 1);
  return [images.join(','), ...[...counts].map(([k, n]) => `+${n} ${k}`)].join(' ');
}

/** The catalog's current record of every tag (name:tag:record, and the entries), and whether there is a catalog at all. */
export async function currentRecords(repo: Repository, signal: AbortSignal): Promise<{ current: Set<string>; hasCatalog: boolean; entries: readonly ReleaseRef[] }> {
  const catalog = (await repo.readCatalog(signal))?.catalog;
  const entries = catalog?.releases ?? [];
  return { current: new Set(entries.map((e) => `${e.name}:${e.tag}:${e.record}`)), hasCatalog: catalog !== undefined, entries };
}

/**
 * The releases of one tag as the repository lists them, or, where it cannot list (a web mirror
 * without a folder listing, one that answers 404 for folders), the current one the catalog names:
 * the catalog and the records are all `ls` and `log` need (docs/mirror.md).
 */
export async function releasesOf(repo: Repository, name: string, tag: string, entries: readonly ReleaseRef[], signal: AbortSignal): Promise<ReleaseRef[]> {
  const listed = await repo.listReleases(name, tag, signal).catch((e: unknown) => {
    if (e instanceof ListingUnavailableError) return [];
    throw e;
  });
  if (listed.length > 0) return listed;
  return entries.filter((e) => e.name === name && e.tag === tag);
}

/** The tags the repository lists, with those only its catalog names (no listing), sorted. */
async function allTags(repo: Repository, entries: readonly ReleaseRef[], signal: AbortSignal): Promise<{ tags: { name: string; tag: string }[]; listing: boolean }> {
  let listing = true;
  const listed = await repo.listTags(signal).catch((e: unknown) => {
    if (!(e instanceof ListingUnavailableError)) throw e;
    listing = false;
    return [];
  });
  // the catalog's tags stand in only where the listing shows nothing (no listing; a mirror that
  // answers 404 for folders): where it lists, a tag it lacks is a fault for check, not a row here
  const tags = listed.length > 0 ? listed : entries.map((e) => ({ name: e.name, tag: e.tag }));
  return { tags: tags.sort((a, b) => (`${a.name}:${a.tag}` < `${b.name}:${b.tag}` ? -1 : 1)), listing: listing && listed.length > 0 };
}

/** The hosts' acknowledgements; one that does not parse is named in a warning and left out. */
export async function readAcksNoting(ctx: Context, repo: Repository): Promise<Ack[]> {
  const got = await repo.readAcks(ctx.signal).catch((e: unknown) => {
    if (!(e instanceof ListingUnavailableError)) throw e;
    // a web mirror without a folder listing: the releases still list, without their hosts
    ctx.out.info(`${repo.location} offers no folder listing: which hosts loaded each release is not shown`);
    return { acks: [], bad: [] };
  });
  for (const b of got.bad) ctx.out.warn(`${b.file}: ${b.problem}`);
  return got.acks;
}

/** The HOSTS column: host names (ids where two hosts share a name), or '-'. */
export const hostsCell = (r: ListedRelease) => (r.hosts.length ? r.hosts.map((h) => (r.hosts.filter((o) => o.hostname === h.hostname).length > 1 ? `${h.hostname}(${h.host})` : h.hostname)).join(',') : '-');

export const shortTime = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');

export async function lsCommand(ctx: Context, url: string, flags: LsFlags): Promise<number> {
  const repo = await openRepository(url, 'URL', flags, { signal: ctx.signal });
  const rows: ListedRelease[] = [];
  const unreadable: { name: string; tag: string; version: number; record: string; error: { code: string; message: string } }[] = [];
  try {
    const { current, hasCatalog, entries } = await currentRecords(repo, ctx.signal);
    const acks = await readAcksNoting(ctx, repo);
    const { tags, listing } = await allTags(repo, entries, ctx.signal);
    if (!listing && entries.length > 0 && !flags.latest) ctx.out.info(`${repo.location} offers no folder listing: each tag's current release, from the catalog (older versions are not shown)`);
    // a typo in the path, or a stick that is not mounted, must not read as an empty repository
    // (an initialised repository with nothing pushed yet lists as empty)
    if (!hasCatalog && tags.length === 0 && !(await repo.identity(ctx.signal))) {
      throw new TarportError('NOT_FOUND', `${repo.location} holds no catalog (tarport/catalog.json) and no releases: not a tarport repository, or nothing was pushed yet`);
    }
    if (!hasCatalog && tags.length > 0) ctx.out.warn(`${repo.location} holds releases but no catalog: consumers see none of them until a push or sync writes one`);
    for (const { name, tag } of tags) {
      const refs = await releasesOf(repo, name, tag, entries, ctx.signal);
      // --latest: the newest that reads, as the catalog's rebuild takes it; the ones above it are named
      for (const ref of flags.latest ? [...refs].reverse() : refs) {
        // one damaged record (a stray file, a cut copy) is named, and the others are still listed
        const row = await describeRelease(repo, ref, current, acks, ctx.signal).catch((e: unknown) => {
          if (!unreadableRecord(e)) throw e;
          const { code, message } = e as TarportError;
          unreadable.push({ name: ref.name, tag: ref.tag, version: ref.version, record: ref.record, error: { code, message } });
          ctx.out.warn(`${ref.name}:${ref.tag} v${ref.version} not listed: ${message}`);
          return undefined;
        });
        if (row) rows.push(row);
        if (row && flags.latest) break;
      }
    }
  } finally {
    await repo.close();
  }
  ctx.out.document({ repository: repo.location, releases: rows, ...(unreadable.length ? { unreadable } : {}) });
  // a record gone since the listing (a gc meanwhile) is said, not a fault
  const code = unreadable.some((u) => isRefusalCode(u.error.code)) ? EXIT.trust : EXIT.ok;
  if (rows.length === 0) {
    ctx.out.info(`${repo.location}: no releases`);
    return code;
  }
  // the table is data (`tarport ls REPO | grep app`): stdout
  const header = ['NAME', 'TAG', 'VERSION', 'KIND', 'SIZE', 'CREATED', 'SIGNER', 'ENCRYPTED', 'PLATFORMS', 'HOSTS'];
  ctx.out.data(
    table([header, ...rows.map((r) => [r.name, r.tag, String(r.version), r.kind, humanBytes(r.size), shortTime(r.created), r.signer ?? '-', r.encrypted ? 'yes' : 'no', membersColumn(r.platforms), hostsCell(r)])]),
  );
  return code;
}
