import { pull, type Subscription } from '../../consumer/index.js';
import { DockerClient } from '../../docker/index.js';
import { TarportError, isTarportError } from '../../errors.js';
import { validateName, validateTag } from '../../repo/index.js';
import { defaultStateDir, openRepository, type ConnectionFlags, type Context } from '../context.js';
import { humanBytes } from '../output.js';

export interface PullFlags extends ConnectionFlags {
  from?: string;
  state?: string;
  allowExpired?: boolean;
}

export function parseSubscriptions(args: string[]): Subscription[] {
  return args.map((a) => {
    if (a.includes('@')) throw new TarportError('USAGE', `${JSON.stringify(a)}: follow NAME or NAME:TAG`);
    const slash = a.lastIndexOf('/');
    const colon = a.lastIndexOf(':');
    if (colon > slash) return { name: validateName(a.slice(0, colon)), tag: validateTag(a.slice(colon + 1)) };
    return { name: validateName(a) };
  });
}

export async function pullCommand(ctx: Context, names: string[], flags: PullFlags): Promise<number> {
  const subscriptions = parseSubscriptions(names);
  const repo = await openRepository(flags.from, '--from', flags);
  const docker = new DockerClient();
  try {
    const r = await pull(repo, docker, {
      subscriptions,
      stateDir: flags.state ?? defaultStateDir(),
      allowExpired: flags.allowExpired ?? false,
      signal: ctx.signal,
      onEvent: (e) => {
        switch (e.kind) {
          case 'up-to-date':
            ctx.out.info(`up to date ${e.ref} v${e.version}`);
            break;
          case 'loading':
            ctx.out.info(`loading ${e.ref} v${e.version}: ${e.layers} layer(s), ${e.skipped} already in the daemon`);
            break;
          case 'loaded':
            ctx.out.info(`loaded ${e.ref} v${e.version} as ${e.imageId.slice(0, 19)} (${humanBytes(e.bytesFetched)} fetched)`);
            break;
          case 'warning':
            ctx.out.warn(e.message);
            break;
        }
      },
    });
    ctx.out.document({ ...r, transport: repo.counters });
    return 0;
  } catch (e) {
    if (isTarportError(e, 'LOCKED')) {
      ctx.out.info(e.message);
      ctx.out.document({ locked: true, message: e.message });
      return 0;
    }
    throw e;
  } finally {
    await repo.transport.close();
  }
}
