import { signatureIssuer } from '../../crypto/index.js';
import { TarportError } from '../../errors.js';
import { recordKey } from '../../repo/index.js';
import { openRepository, type ConnectionFlags, type Context } from '../context.js';
import { humanBytes, table } from '../output.js';

export interface LsFlags extends ConnectionFlags {
  latest?: boolean;
}

export interface ListedRelease {
  name: string;
  tag: string;
  version: number;
  kind: string;
  size: number;
  created: string;
  signer: string | null;
  encrypted: boolean;
  current: boolean;
}

export async function lsCommand(ctx: Context, url: string, flags: LsFlags): Promise<number> {
  const repo = await openRepository(url, 'URL', flags, ctx.signal);
  const rows: ListedRelease[] = [];
  try {
    const catalog = (await repo.readCatalog(ctx.signal))?.catalog;
    const current = new Set((catalog?.releases ?? []).map((e) => `${e.name}:${e.tag}:${e.record}`));
    const tags = (await repo.listTags(ctx.signal)).sort((a, b) => (`${a.name}:${a.tag}` < `${b.name}:${b.tag}` ? -1 : 1));
    // a typo in the path, or a stick that is not mounted, must not read as an empty repository
    if (!catalog && tags.length === 0) {
      throw new TarportError('NOT_FOUND', `${repo.location} holds no catalog (tarport/catalog.json) and no releases: not a tarport repository, or nothing was pushed yet`);
    }
    if (!catalog) ctx.out.warn(`${repo.location} holds releases but no catalog: consumers see none of them until a push or sync writes one`);
    for (const { name, tag } of tags) {
      const refs = await repo.listReleases(name, tag, ctx.signal);
      for (const ref of flags.latest ? refs.slice(-1) : refs) {
        const { record } = await repo.readRecord(ref, undefined, ctx.signal);
        const sig = await repo.readSignature(recordKey(name, tag, ref.record), ctx.signal);
        rows.push({
          name,
          tag,
          version: record.version,
          kind: record.kind,
          size: record.layers.reduce((n, l) => n + l.size, 0) + (record.config?.size ?? 0),
          created: record.created,
          signer: sig ? ((await signatureIssuer(sig)) ?? 'unreadable signature') : null,
          encrypted: record.layers.some((l) => l.encryption !== undefined),
          current: current.has(`${name}:${tag}:${ref.record}`),
        });
      }
    }
  } finally {
    await repo.transport.close();
  }
  if (ctx.out.json) {
    ctx.out.document({ repository: repo.location, releases: rows });
  } else if (rows.length === 0) {
    ctx.out.info(`${repo.location}: no releases`);
  } else {
    const header = ['NAME', 'TAG', 'VERSION', 'KIND', 'SIZE', 'CREATED', 'SIGNER', 'ENCRYPTED'];
    ctx.out.info(
      table([
        header,
        ...rows.map((r) => [r.name, r.tag, String(r.version) + (r.current ? '' : ''), r.kind, humanBytes(r.size), r.created.replace(/\.\d+Z$/, 'Z'), r.signer ?? '-', r.encrypted ? 'yes' : 'no']),
      ]),
    );
  }
  return 0;
}
