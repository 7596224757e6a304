import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { docker, fixture, readTar, realEnv, tarport, tempDir } from '../helpers.js';

// Multi-platform images (scripts/lib/oci-multi.mjs: linux/amd64 runnable, linux/arm64/v8 made by
// editing the config, a BuildKit attestation) publish as one release in every archive shape, and
// each runtime loads its own platform only. The arm64 config sets TARPORT_PLATFORM=arm64: its layers
// are busybox for amd64 and would run here, so the test reads which config a container started from.

const run = promisify(execFile);

function need(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite through scripts/test (it starts containerd and Podman's API service)`);
  return v;
}
const sock = need('TP_CONTAINERD_SOCK');
const podmanSock = need('TP_PODMAN_SOCK');
const podmanArgs = need('TP_PODMAN_ARGS').split(' ');
const podmanEnv = { ...process.env, CONTAINERS_CONF: need('TP_CONTAINERS_CONF') };
const ctr = async (ns: string, ...args: string[]) => (await run('ctr', ['-a', sock, '-n', ns, ...args], { maxBuffer: 16 << 20, timeout: 120_000 })).stdout;
const podman = async (...args: string[]) => (await run('podman', [...podmanArgs, ...args], { env: podmanEnv, maxBuffer: 16 << 20, timeout: 120_000 })).stdout.trim();

const REF = 'tarport-fixture/multi:1';
const QUALIFIED = `docker.io/${REF}`;
const SHAPES = ['multi-layout.tar', 'multi-flat.tar', 'multi-skopeo-all.tar', 'multi-docker25.tar'];

/** The config digests of the fixture's platforms, read from its OCI layout. */
async function fixtureConfigs(): Promise<{ amd64: string; arm64: string }> {
  const items = new Map((await readTar(fixture('multi-layout.tar'))).map((i) => [i.header.name, i.data]));
  const json = <T>(name: string) => JSON.parse(items.get(name)!.toString()) as T;
  const blob = <T>(digest: string) => json<T>(`blobs/sha256/${digest.slice(7)}`);
  const nested = blob<{ manifests: { digest: string; platform: { architecture: string } }[] }>(json<{ manifests: { digest: string }[] }>('index.json').manifests[0]!.digest);
  const configOf = (arch: string) => blob<{ config: { digest: string } }>(nested.manifests.find((m) => m.platform.architecture === arch)!.digest).config.digest;
  return { amd64: configOf('amd64'), arm64: configOf('arm64') };
}

describe('multi-platform images: one release, each runtime loads its own platform', () => {
  let repo: string;
  let state: string;
  let configs: { amd64: string; arm64: string };
  const pull = (...args: string[]) => tarport(['pull', '--json', '--from', repo, ...args], { DOCKER_HOST: realEnv().consumer });

  beforeAll(async () => {
    repo = join(await tempDir(), 'repo');
    state = await tempDir();
    configs = await fixtureConfigs();
    for (const ns of ['k8s.io', 'tarport-arm']) {
      for (const n of (await ctr(ns, 'images', 'ls', '-q')).split('\n').filter((x) => x.includes('tarport-fixture/multi'))) await ctr(ns, 'images', 'rm', n);
    }
    await docker('consumer', 'rmi', '-f', REF).catch(() => undefined);
    await podman('rmi', '-f', QUALIFIED).catch(() => undefined);
  });

  it('each archive shape (buildx layout, flat index.json, skopeo --all, Docker 25+ with an absent platform) publishes as one release', async () => {
    const versions: string[] = [];
    for (const shape of SHAPES) {
      const r = await tarport(['push', '--json', '--init', fixture(shape), '--to', repo]);
      expect(r.code, `${shape}: ${r.stderr}`).toBe(0);
      const doc = JSON.parse(r.stdout) as { pushed: { releases: { name: string; tag: string; version: number; status: string }[] }[] };
      const releases = doc.pushed[0]!.releases;
      expect(releases.map((x) => `${x.name}:${x.tag}`), shape).toEqual([REF]);
      versions.push(`${releases[0]!.version} ${releases[0]!.status}`);
    }
    // the same platforms and attestation make the same content; the absent s390x makes another
    expect(versions).toEqual(['1 published', '1 unchanged', '1 unchanged', '2 published']);
    const ls = JSON.parse((await tarport(['ls', '--json', repo])).stdout) as { releases: { version: number; platforms: { platform: string; state: string; type?: string }[] }[] };
    expect(ls.releases.map((r) => r.platforms.map((m) => `${m.platform} ${m.state}${m.type ? ' ' + m.type : ''}`))).toEqual([
      ['linux/amd64 image', 'linux/arm64/v8 image', 'unknown/unknown artifact attestation-manifest'],
      ['linux/amd64 image', 'linux/arm64/v8 image', 'unknown/unknown artifact attestation-manifest', 'linux/s390x absent'],
    ]);
  });

  it('skopeo copies the whole index out of the repository (both platforms and the attestation)', async () => {
    const out = join(await tempDir(), 'copy');
    await run('skopeo', ['copy', '-q', '--all', `oci:${repo}:${REF}`, `dir:${out}`], { timeout: 120_000 });
    const files = await readdir(out);
    const manifests = files.filter((f) => f.endsWith('.manifest.json'));
    expect(manifests).toHaveLength(3);
    const top = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as { mediaType: string; manifests: { platform?: { architecture: string } }[] };
    expect(top.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(top.manifests.map((m) => m.platform?.architecture)).toEqual(['amd64', 'arm64', 'unknown']);
    expect(files).toContain(configs.arm64.slice(7));
  });

  it('Docker (classic store) loads the amd64 image only, and it runs', async () => {
    const r = await pull('--state', join(state, 'docker'), '--runtime', 'docker', REF);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { loaded: { imageId: string }[] }).loaded.map((l) => l.imageId)).toEqual([configs.amd64]);
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', REF, 'sh', '-c', 'echo $TARPORT_PLATFORM')).toBe('amd64');
  });

  it('containerd (k8s.io) gets the amd64 image, complete, and runs it', async () => {
    const r = await pull('--state', join(state, 'containerd'), '--runtime', 'containerd', '--containerd-socket', sock);
    expect(r.code, r.stderr).toBe(0);
    const ls = await ctr('k8s.io', 'images', 'ls');
    expect(ls).toMatch(new RegExp(`${QUALIFIED}\\s+\\S+ sha256:[0-9a-f]{64} [^\\n]* linux/amd64 `));
    expect(await ctr('k8s.io', 'images', 'check', `name==${QUALIFIED}`)).toContain('complete (5/5)');
    const out = await ctr('k8s.io', 'run', '--rm', QUALIFIED, `tarport-multi-${process.pid}`, 'sh', '-c', 'echo $TARPORT_PLATFORM');
    expect(out.trim()).toBe('amd64');
  });

  it('--platform linux/arm64 loads the arm64 image into containerd', async () => {
    const r = await pull('--state', join(state, 'arm'), '--runtime', 'containerd', '--containerd-socket', sock, '--namespace', 'tarport-arm', '--platform', 'linux/arm64');
    expect(r.code, r.stderr).toBe(0);
    // the platform of the image loaded, as its config names it (the fixture's arm64 config says v8)
    expect(r.stderr).toContain('into containerd (linux/arm64/v8)');
    const ls = await ctr('tarport-arm', 'images', 'ls');
    expect(ls).toMatch(new RegExp(`${QUALIFIED}\\s+\\S+ sha256:[0-9a-f]{64} [^\\n]* linux/arm64 `));
    expect(await ctr('tarport-arm', 'images', 'check', `name==${QUALIFIED}`)).toContain('complete (5/5)');
  });

  it('Podman loads the amd64 image, and it runs', async () => {
    const r = await pull('--state', join(state, 'podman'), '--runtime', 'podman', '--podman-socket', podmanSock);
    expect(r.code, r.stderr).toBe(0);
    expect(await podman('run', '--rm', '--network', 'none', QUALIFIED, 'sh', '-c', 'echo $TARPORT_PLATFORM')).toBe('amd64');
  });

  it('a platform the release lacks is refused with exit 2, naming the platforms it has; nothing is loaded', async () => {
    const r = await pull('--state', join(state, 'ppc'), '--runtime', 'containerd', '--containerd-socket', sock, '--namespace', 'tarport-ppc', '--platform', 'linux/ppc64le');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`refused ${REF} v2: ${REF} v2 has no image for linux/ppc64le: it has linux/amd64, linux/arm64/v8 (listed without their blobs: linux/s390x)`);
    expect((JSON.parse(r.stdout) as { refused: { code: string }[] }).refused.map((x) => x.code)).toEqual(['PLATFORM']);
    expect(await ctr('tarport-ppc', 'images', 'ls', '-q')).toBe('');
  });

  it('sync carries the whole release, attestation and all', async () => {
    const dst = join(await tempDir(), 'stick');
    expect((await tarport(['sync', '--init', repo, dst])).code).toBe(0);
    const c = await tarport(['check', '--json', dst]);
    expect(c.code, c.stderr).toBe(0);
    const blobs = await readdir(join(dst, 'blobs', 'sha256'));
    expect(blobs).toEqual(expect.arrayContaining([configs.amd64.slice(7), configs.arm64.slice(7)]));
    const ls = JSON.parse((await tarport(['ls', '--json', '--latest', dst])).stdout) as { releases: { platforms: { state: string }[] }[] };
    expect(ls.releases[0]!.platforms.map((m) => m.state)).toEqual(['image', 'image', 'artifact', 'absent']);
  });
});
