import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StateStore } from '../../consumer/index.js';
import { DockerClient, chainIds } from '../../runtime/index.js';
import { TarportError, wrapSystemError } from '../../errors.js';
import { parseInventory, putTool, readToolFiles, syncRepos, type Inventory, type ToolResult } from '../../sync/index.js';
import { CATALOG_TTL_BOUNDS, defaultStateDir, deprecatedAlias, openRepository, parseDuration, signerFrom, type ConnectionFlags, type Context } from '../context.js';
import { humanBytes } from '../output.js';
import { parseSubscriptions } from './pull.js';

export interface SyncFlags extends ConnectionFlags {
  only?: string[];
  have?: string;
  signKey?: string;
  signKeyPassphraseFile?: string;
  catalogTtl?: string;
  maxFileSize?: string;
  withTool?: string[];
  init?: boolean;
}

/** Sizes: bytes, or with K, M, G (powers of 1024; "Gi", "GiB" too); "fat32" is 4 GiB - 1. */
export function parseSize(s: string, what: string): number {
  if (s.toLowerCase() === 'fat32') return 4 * 1024 ** 3 - 1;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b?)?(?:\s*-\s*(\d+))?$/i.exec(s.trim());
  if (!m) throw new TarportError('USAGE', `${what} ${JSON.stringify(s)}: a size such as 4G, 700M, 4294967295 or fat32`, { flag: what });
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const n = Math.floor(Number(m[1]) * unit) - Number(m[3] ?? 0);
  if (n < 4096) throw new TarportError('USAGE', `${what} ${JSON.stringify(s)}: at least 4096 bytes`, { flag: what });
  return n;
}

/** `tarport sync SRC DST`: copy what DST lacks (air gap). */
export async function syncCommand(ctx: Context, srcUrl: string, dstUrl: string, flags: SyncFlags): Promise<number> {
  const only = parseSubscriptions(flags.only ?? []);
  const have = flags.have ? parseInventory(await readFile(flags.have, 'utf8').catch((e: unknown) => {
    throw new TarportError('BAD_INPUT', `--have ${flags.have}: ${(e as Error).message}`);
  }), flags.have) : undefined;
  const sign = await signerFrom(flags);
  // the tool's files are read before anything is copied: a wrong path stops the run at once
  const tool = flags.withTool?.length ? await readToolFiles(flags.withTool, ctx.signal) : undefined;
  const src = await openRepository(srcUrl, 'SRC', flags, { signal: ctx.signal });
  const dst = await openRepository(dstUrl, 'DST', flags, { write: true, signal: ctx.signal, warn: (m) => ctx.out.warn(m) });
  // a person at a terminal gets a progress bar instead of a line per object; logs keep the lines
  const bar = process.stderr.isTTY && !ctx.out.quiet ? await progressBar() : undefined;
  try {
    const r = await syncRepos(src, dst, {
      ...(only.length ? { only } : {}),
      ...(have ? { have } : {}),
      ...(sign ? { sign } : {}),
      catalogTtlMs: parseDuration(flags.catalogTtl ?? '90d', '--catalog-ttl', CATALOG_TTL_BOUNDS),
      ...(flags.maxFileSize ? { maxFileSize: parseSize(flags.maxFileSize, '--max-file-size') } : {}),
      signal: ctx.signal,
      ...(flags.init ? { create: true } : {}),
      onEvent: (e) => {
        if (e.kind === 'plan') bar?.start(e.bytes, 0);
        else if (e.kind === 'bytes') bar?.increment(e.bytes);
        else if (e.kind === 'object') {
          if (!bar && e.status !== 'present') ctx.out.info(`object ${e.digest.slice(0, 19)} ${humanBytes(e.size)}: ${e.status}`);
        } else {
          // objects are done before releases and the catalog: the bar has said all it will
          bar?.stop();
          if (e.kind === 'warning') ctx.out.warn(e.message);
          else if (e.kind === 'acks') ctx.out.info(`acknowledgements: ${e.copied} host(s) carried`);
          else if (e.kind === 'release') ctx.out.info(`release ${e.ref} v${e.version}: ${e.status}`);
          else ctx.out.info(`catalog: ${e.status}${e.signed ? ' (signed)' : ''}`);
        }
      },
    });
    bar?.stop();
    ctx.out.info(`${r.objectsCopied} object(s), ${humanBytes(r.bytesCopied)} copied to ${dst.location}${r.objectsRepaired ? `, ${r.objectsRepaired} repaired` : ''}`);
    let carried: ToolResult | undefined;
    if (tool) {
      carried = await putTool(dst.beside, tool, {
        ...(sign ? { sign } : {}),
        signal: ctx.signal,
        onEvent: (e) => {
          if (e.kind === 'tool') ctx.out.info(`tool ${e.name} ${humanBytes(e.size)} sha256:${e.sha256.slice(0, 12)}: copied`);
          else if (e.kind === 'tool-removed') ctx.out.info(`tool ${e.name}: removed (an earlier delivery's, not carried this time)`);
          else if (e.signed) ctx.out.info('tool: SHA256SUMS written and signed');
          else ctx.out.warn('tool: SHA256SUMS written but not signed (no --sign-key): the low side can only compare it with a copy it trusts');
        },
      });
    }
    ctx.out.document({ ...r, source: src.location, destination: dst.location, ...(carried ? { tool: carried } : {}) });
    return 0;
  } finally {
    bar?.stop();
    await src.close();
    await dst.close();
  }
}

export interface InventoryFlags extends ConnectionFlags {
  docker?: boolean;
  from?: string;
  /** Deprecated spelling of --from (TARPORT_REPO meant a folder for demo). */
  repo?: string;
  output?: string;
  state?: string;
}

/** `tarport inventory`: what this site has, for `sync --have`. */
export async function inventoryCommand(ctx: Context, flags: InventoryFlags): Promise<number> {
  if (!flags.output) throw new TarportError('USAGE', 'inventory needs -o FILE');
  const from = deprecatedAlias(ctx, { name: '--from', value: flags.from }, { name: '--repo', env: 'TARPORT_REPO', value: flags.repo });
  if (!!flags.docker === !!from) throw new TarportError('USAGE', 'inventory takes one of --docker or --from URL');
  const inv: Inventory = { schema: 'tarport.inventory/v1', created: new Date().toISOString(), source: '', diffIds: [], chainIds: [], objects: [], releases: {} };
  if (flags.docker) {
    const d = new DockerClient();
    inv.source = d.endpoint;
    const diff = new Set<string>();
    const chains = new Set<string>();
    // diff IDs and chain IDs of every image: the layers a load can skip
    for (const id of await d.imageIds(ctx.signal)) {
      const layers = (await d.inspectImage(id, ctx.signal))?.RootFS?.Layers ?? [];
      for (const l of layers) diff.add(l);
      for (const c of chainIds(layers)) chains.add(c);
    }
    // a daemon on the containerd store loads every layer of an image it is given: none can be left off
    if ((await d.imageStore(ctx.signal)) === 'graphdriver') inv.chainIds = [...chains].sort();
    else ctx.out.warn(`${d.endpoint} keeps images in the containerd store, which loads every layer of an image: the inventory offers no layer to leave off (only whole releases)`);
    inv.diffIds = [...diff].sort();
    // the releases this host loaded, from the consumer state, whose image the daemon still holds
    // under that name: one removed since (docker image prune) is loaded again, so the stick carries it
    const state = await new StateStore(flags.state ?? defaultStateDir()).read();
    for (const byRef of Object.values(state.loaded)) {
      for (const [ref, l] of Object.entries(byRef)) {
        if ((await d.inspectImage(ref, ctx.signal))?.Id === l.imageId) (inv.releases[ref] ??= []).push(l.digest);
        else ctx.out.info(`${ref} v${l.version}: loaded once, but ${d.endpoint} no longer holds it under that name; not counted as held`);
      }
    }
  } else {
    const repo = await openRepository(from, '--from', flags, { signal: ctx.signal });
    inv.source = repo.location;
    try {
      // the inventory is a site's claim of what it holds: a typo must not claim "nothing"
      await repo.require('inventory', ctx.signal);
      inv.objects.push(...(await repo.listObjects(ctx.signal)));
      for (const e of (await repo.readCatalog(ctx.signal))?.catalog.releases ?? []) (inv.releases[`${e.name}:${e.tag}`] ??= []).push(e.digest);
    } finally {
      await repo.close();
    }
  }
  await writeInventory(flags.output, inv);
  ctx.out.info(`wrote ${flags.output}: ${inv.diffIds.length} layer(s), ${inv.objects.length} object(s), ${Object.keys(inv.releases).length} release tag(s) from ${inv.source}`);
  ctx.out.document(inv);
  return 0;
}

/**
 * The inventory file, whole or not at all (a full disk leaves the earlier one, never half a file
 * that `sync --have` would refuse): written beside its place, then renamed over it.
 */
async function writeInventory(file: string, inv: Inventory): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    // synced before the rename: an inventory is often written onto the stick that carries it
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(inv, null, 2) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new TarportError('USAGE', `-o ${file}: the folder ${dirname(file)} does not exist`);
    throw wrapSystemError(e, `write the inventory ${file}`);
  }
}

/** Bytes done of bytes planned, with speed and time left, redrawn in place on stderr. */
async function progressBar() {
  const { SingleBar } = await import('cli-progress');
  return new SingleBar({
    stream: process.stderr,
    hideCursor: true,
    etaBuffer: 50,
    format: (opts, p) => {
      const width = opts.barsize ?? 30;
      const filled = Math.round(Math.min(1, p.progress) * width);
      const secs = Math.max(0.001, ((p.stopTime ?? Date.now()) - p.startTime) / 1000);
      const left = p.value > 0 && p.value < p.total ? `, ${Math.ceil(((p.total - p.value) / p.value) * secs)} s left` : '';
      return `sync [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${Math.floor(p.progress * 100)}% ${humanBytes(p.value)} of ${humanBytes(p.total)}, ${humanBytes(p.value / secs)}/s${left}`;
    },
  });
}
