import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeDemoArchives } from '../../archive/index.js';
import { pull } from '../../consumer/index.js';
import { DockerClient, DockerRuntime } from '../../runtime/index.js';
import { TarportError } from '../../errors.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../producer/index.js';
import { Repository } from '../../repo/index.js';
import { FileTransport } from '../../transport/index.js';
import { deprecatedAlias, type Context } from '../context.js';
import { humanBytes } from '../output.js';

export interface DemoFlags {
  archive?: string[];
  repoDir?: string;
  /** Deprecated spelling of --repo-dir (TARPORT_REPO meant a URL for inventory). */
  repo?: string;
  state?: string;
}

/**
 * The main job end to end on a local-directory repository: each archive is pushed and then pulled
 * into the daemon at DOCKER_HOST, one after the other, so the second pull shows that only what is new
 * crosses over. Without archives, two small generated versions of one image are used.
 */
export async function demoCommand(ctx: Context, flags: DemoFlags): Promise<number> {
  // the flags first: a usage error is said as one (exit 2), daemon or not
  const chosenDir = deprecatedAlias(ctx, { name: '--repo-dir', value: flags.repoDir }, { name: '--repo', env: 'TARPORT_REPO', value: flags.repo });
  const work = await mkdtemp(join(tmpdir(), 'tarport-demo-'));
  const steps: unknown[] = [];
  try {
    const docker = new DockerClient();
    await docker.ping(ctx.signal).catch((e: unknown) => {
      throw new TarportError('DAEMON', `the demo loads into a Docker daemon and none answers at ${docker.endpoint} (${(e as Error).message}); start one or set DOCKER_HOST`);
    });
    const archives = flags.archive && flags.archive.length > 0 ? flags.archive : await writeDemoArchives(work);
    const repoDir = chosenDir ?? join(work, 'repo');
    const repo = new Repository(new FileTransport(repoDir));
    const stateDir = flags.state ?? join(work, 'state');
    ctx.out.info(`repository: ${repoDir} (a local directory; a USB stick works the same)`);
    ctx.out.info(`consumer daemon: ${docker.endpoint}`);
    for (const a of archives) {
      // the demo's repository is its own, made for this run: creating it is the point
      const p = await publishArchive(repo, a, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, signal: ctx.signal });
      for (const r of p.releases) ctx.out.info(`push  ${a}: ${r.status} ${r.name}:${r.tag} v${r.version}, ${p.uploadedObjects} new object(s), ${humanBytes(p.uploadedBytes)} written`);
      const l = await pull(repo, new DockerRuntime(docker), { subscriptions: [], stateDir, signal: ctx.signal });
      for (const r of l.loaded) ctx.out.info(`pull  ${r.ref} v${r.version} loaded as ${r.imageId.slice(0, 19)}, ${humanBytes(l.bytesFetched)} read from the repository`);
      for (const r of l.upToDate) ctx.out.info(`pull  ${r} already up to date`);
      steps.push({ archive: a, push: p, pull: l });
    }
    ctx.out.info('done: every release crossed over; run it with docker run, list it with tarport ls');
    ctx.out.document({ repository: repoDir, steps });
    return 0;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
