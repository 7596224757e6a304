import { TarportError } from '../../errors.js';
import { parseRef } from '../../repo/index.js';
import { openRepository, type ConnectionFlags, type Context } from '../context.js';
import { humanBytes, table } from '../output.js';
import { currentRecords, describeRelease, hostsCell, readAcksNoting, releasesOf, shortTime, type ListedRelease } from './ls.js';

export interface LogFlags extends ConnectionFlags {
  from?: string;
}

/** `tarport log NAME:TAG --from URL`: every version of one tag, oldest first, the current one marked. */
export async function logCommand(ctx: Context, refArg: string, flags: LogFlags): Promise<number> {
  const { name, tag } = parseRef(refArg, { what: 'NAME:TAG', defaultTag: 'latest' });
  const repo = await openRepository(flags.from, '--from', flags, { signal: ctx.signal });
  const versions: ListedRelease[] = [];
  try {
    const { current, entries } = await currentRecords(repo, ctx.signal);
    const acks = await readAcksNoting(ctx, repo);
    for (const ref of await releasesOf(repo, name, tag, entries, ctx.signal)) versions.push(await describeRelease(repo, ref, current, acks, ctx.signal));
  } finally {
    await repo.close();
  }
  if (versions.length === 0) throw new TarportError('NOT_FOUND', `${repo.location} holds no release of ${name}:${tag}; tarport ls ${repo.location} lists what it holds`);
  ctx.out.document({ repository: repo.location, name, tag, versions });
  const header = ['VERSION', 'CREATED', 'SIZE', 'SIGNER', 'ENCRYPTED', 'RECORD', 'HOSTS', ''];
  ctx.out.data(
    table([
      header,
      ...versions.map((v) => [String(v.version), shortTime(v.created), humanBytes(v.size), v.signer ?? '-', v.encrypted ? 'yes' : 'no', v.digest, hostsCell(v), v.current ? 'current' : '']),
    ]),
  );
  return 0;
}
