import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { docker, emptyDaemon, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// Single-platform archives written by other tools than docker save publish as the same image:
// podman save (docker-archive and oci-archive), ctr images export, skopeo copy to docker-archive:
// and oci-archive:. Each is written here from the fixture, by the real tool.

const run = promisify(execFile);
const env = realEnv();

function need(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite through scripts/test (it starts containerd and Podman's API service)`);
  return v;
}

const sock = need('TP_CONTAINERD_SOCK');
const podmanArgs = need('TP_PODMAN_ARGS').split(' ');
const podmanEnv = { ...process.env, CONTAINERS_CONF: need('TP_CONTAINERS_CONF') };
const opts = { maxBuffer: 16 << 20, timeout: 180_000 };
// a namespace of the test's own: the runtime tests' k8s.io stays as they left it
const ctr = (...a: string[]) => run('ctr', ['-a', sock, '-n', 'tarport-ingest', ...a], opts);
const podman = (...a: string[]) => run('podman', [...podmanArgs, ...a], { ...opts, env: podmanEnv });
const skopeo = (...a: string[]) => run('skopeo', a, opts);

/** The image ID (config digest) of the image in an archive, as skopeo reads it. */
async function configDigest(transport: string, path: string): Promise<string> {
  const { stdout } = await run('skopeo', ['inspect', '--config', '--raw', `${transport}:${path}`], { ...opts, encoding: 'buffer' });
  return 'sha256:' + createHash('sha256').update(stdout).digest('hex');
}

const TOOLS: [string, string][] = [
  ['podman-docker-archive', 'docker-archive'],
  ['podman-oci-archive', 'oci-archive'],
  ['ctr-export', 'oci-archive'],
  ['skopeo-docker-archive', 'docker-archive'],
  ['skopeo-oci-archive', 'oci-archive'],
];

describe('ingest: archives of podman, ctr and skopeo publish as one release of the image they hold', () => {
  let dir: string;
  const archives: Record<string, string> = {};

  beforeAll(async () => {
    dir = await tempDir();
    // Podman 4 names a docker-archive's short RepoTags under localhost/ (localhost/tarport-fixture/
    // app:1); the name every other tool uses is given to what it says it loaded
    const { stdout } = await podman('load', '-i', fixture('app-v1.tar'));
    const loaded = /^Loaded image(?:\(s\))?: (\S+)$/m.exec(stdout)?.[1];
    if (!loaded) throw new Error(`podman load said no image name: ${stdout}`);
    await podman('tag', loaded, 'docker.io/tarport-fixture/app:1');
    await ctr('images', 'import', fixture('app-v1.tar'));
    const a = (n: string) => (archives[n] = join(dir, `${n}.tar`));
    await podman('save', '--format', 'docker-archive', '-o', a('podman-docker-archive'), 'docker.io/tarport-fixture/app:1');
    await podman('save', '--format', 'oci-archive', '-o', a('podman-oci-archive'), 'docker.io/tarport-fixture/app:1');
    await ctr('images', 'export', a('ctr-export'), 'docker.io/tarport-fixture/app:1');
    await skopeo('copy', '-q', `docker-archive:${fixture('app-v1.tar')}`, `docker-archive:${a('skopeo-docker-archive')}:tarport-fixture/app:1`);
    await skopeo('copy', '-q', `docker-archive:${fixture('app-v1.tar')}`, `oci-archive:${a('skopeo-oci-archive')}:tarport-fixture/app:1`);
  });

  it.each(TOOLS)('%s: one release under the familiar name, of the image the archive holds', async (tool, transport) => {
    const repo = join(dir, `repo-${tool}`);
    const push = await tarport(['push', '--init', archives[tool]!, '--to', repo, '--json']);
    expect(push.stderr).toContain('published tarport-fixture/app:1 v1 (image)');
    expect(push.code).toBe(0);
    const ls = JSON.parse((await tarport(['ls', repo, '--json'])).stdout) as { releases: { name: string; tag: string }[] };
    expect(ls.releases.map((r) => `${r.name}:${r.tag}`)).toEqual(['tarport-fixture/app:1']);
    const records = (await filesBelow(join(repo, 'tarport', 'releases'))).filter((f) => f.endsWith('.json'));
    expect(records).toHaveLength(1);
    const record = JSON.parse(await readFile(join(repo, 'tarport', 'releases', records[0]!), 'utf8')) as { contentKey: string };
    expect(record.contentKey).toBe(await configDigest(transport, archives[tool]!));
  });

  it('the OCI archive of podman loads into Docker and runs', async () => {
    await emptyDaemon('consumer');
    const p = await tarport(['pull', '--from', join(dir, 'repo-podman-oci-archive'), '--state', await tempDir()], { DOCKER_HOST: env.consumer });
    expect(p.stderr).toContain('loaded tarport-fixture/app:1 v1');
    expect(p.code).toBe(0);
    // podman's OCI archive holds a converted config: another image ID than docker save's, the same files
    expect(await docker('consumer', 'image', 'inspect', '-f', '{{.Id}}', 'tarport-fixture/app:1')).toBe(await configDigest('oci-archive', archives['podman-oci-archive']!));
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', 'tarport-fixture/app:1')).toBe('hello from v1');
  });
});
