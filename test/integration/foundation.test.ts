import { execFile } from 'node:child_process';
import { copyFile, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../../src/consumer/index.js';
import { DockerClient, DockerRuntime } from '../../src/runtime/index.js';
import { Repository, isPortableFileName, type ReleaseRecord } from '../../src/repo/index.js';
import { CountingTransport, FileTransport } from '../../src/transport/index.js';
import { ROOT, docker, emptyDaemon, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// A real image crosses from the producer daemon to the consumer daemon through a local-directory
// repository. Fixtures and daemons come from scripts/test.

const env = realEnv();
const run = promisify(execFile);
const consumerEnv = { DOCKER_HOST: env.consumer };

async function runIn(image: string, script: string): Promise<string> {
  return docker('consumer', 'run', '--rm', '--network', 'none', image, '/bin/sh', '-c', script);
}

async function imageIdIn(which: 'producer' | 'consumer', ref: string): Promise<string> {
  return docker(which, 'image', 'inspect', '-f', '{{.Id}}', ref);
}

describe('foundation: push, pull, load, run', () => {
  let repo: string;
  let state: string;

  beforeAll(async () => {
    await emptyDaemon('consumer');
    repo = join(await tempDir(), 'repo');
    state = await tempDir();
  });

  it('v1 crosses over and runs: symlink, hardlink and whiteout honoured', async () => {
    const push = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo]);
    expect(push.stderr).toContain('published tarport-fixture/app:1 v1');
    expect(push.code).toBe(0);
    const p = await tarport(['pull', '--from', repo, '--state', state], consumerEnv);
    expect(p.stderr).toContain('loaded tarport-fixture/app:1 v1');
    expect(p.code).toBe(0);
    expect(await imageIdIn('consumer', 'tarport-fixture/app:1')).toBe(await imageIdIn('producer', 'tarport-fixture/app:1'));
    const out = await runIn(
      'tarport-fixture/app:1',
      'cat /app/hello.txt; readlink /app/link-to-hello; stat -c "%i %h" /app/hl-a /app/hl-b; test -e /etc/deleted-in-upper && echo whiteout-ignored || echo whiteout-honoured; sha256sum /app/random.bin',
    );
    const lines = out.split('\n');
    expect(lines[0]).toBe('hello from v1');
    expect(lines[1]).toBe('/app/hello.txt');
    const [a, b] = [lines[2]!.split(' '), lines[3]!.split(' ')];
    expect(a[0]).toBe(b[0]); // same inode: a hard link survived
    expect(a[1]).toBe('2');
    expect(lines[4]).toBe('whiteout-honoured');
    const producerSum = await docker('producer', 'run', '--rm', '--network', 'none', 'tarport-fixture/app:1', '/bin/sha256sum', '/app/random.bin');
    expect(lines[5]).toBe(producerSum);
  });

  it('v2 after v1 reads from the repository only the new objects', async () => {
    expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo])).code).toBe(0);
    const counting = new CountingTransport(new FileTransport(repo));
    const r = await pull(new Repository(counting), new DockerRuntime(new DockerClient(env.consumer)), { subscriptions: [{ name: 'tarport-fixture/app', tag: '2' }], stateDir: state });
    expect(r.loaded.map((l) => l.ref)).toEqual(['tarport-fixture/app:2']);
    // what is new in v2: the objects of layers v1 does not have
    const records = await readRecords(repo);
    const v1 = records.find((x) => x.tag === '1')!;
    const v2 = records.find((x) => x.tag === '2')!;
    const v1Diffs = new Set(v1.layers.map((l) => l.diffId));
    const newBytes = v2.layers.filter((l) => !v1Diffs.has(l.diffId)).reduce((n, l) => n + l.size, 0);
    expect(newBytes).toBeGreaterThan(0);
    expect(counting.counters.bytesRead).toBeLessThanOrEqual(1.05 * newBytes + 64 * 1024);
    expect(counting.counters.bytesRead).toBeGreaterThanOrEqual(newBytes);
    expect(await runIn('tarport-fixture/app:2', 'cat /app/v2.txt')).toBe('hello from v2');
    expect(await imageIdIn('consumer', 'tarport-fixture/app:2')).toBe(await imageIdIn('producer', 'tarport-fixture/app:2'));
  });

  it('an idle pull changes nothing and says up to date', async () => {
    const p = await tarport(['pull', '--from', repo, '--state', state, '--json'], consumerEnv);
    expect(p.code).toBe(0);
    const doc = JSON.parse(p.stdout);
    expect(doc.loaded).toEqual([]);
    expect(doc.upToDate.sort()).toEqual(['tarport-fixture/app:1', 'tarport-fixture/app:2']);
  });

  it('identical content makes no new version; other content under one tag makes the next', async () => {
    const again = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).pushed[0].releases[0]).toMatchObject({ status: 'unchanged', version: 1 });
    for (const f of ['app-v1.tar', 'app-v2.tar', 'app-v1.tar']) {
      expect((await tarport(['push', '--init', fixture(f), '--to', repo, '--name', 'tarport-test/moving:stable'])).code).toBe(0);
    }
    const ls = JSON.parse((await tarport(['ls', repo, '--json'])).stdout);
    const moving = ls.releases.filter((r: { name: string }) => r.name === 'tarport-test/moving');
    expect(moving.map((r: { version: number }) => r.version)).toEqual([1, 2, 3]);
    const latest = JSON.parse((await tarport(['ls', repo, '--latest', '--json'])).stdout);
    expect(latest.releases.filter((r: { name: string }) => r.name === 'tarport-test/moving').map((r: { version: number }) => r.version)).toEqual([3]);
  });

  it('every name in the repository is valid on FAT32, exFAT and NTFS', async () => {
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'registry.example:5000/Team/app:V1.'])).code).toBe(2);
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'registry.example:5000/team/app:CON'])).code).toBe(0);
    for (const f of await filesBelow(repo)) {
      for (const seg of f.split('/')) expect(isPortableFileName(seg), `${f}`).toBe(true);
    }
    const ls = JSON.parse((await tarport(['ls', repo, '--json'])).stdout);
    expect(ls.releases.some((r: { name: string; tag: string }) => r.name === 'registry.example:5000/team/app' && r.tag === 'CON')).toBe(true);
  });
});

async function readRecords(repo: string): Promise<ReleaseRecord[]> {
  const out: ReleaseRecord[] = [];
  for (const f of await filesBelow(join(repo, 'tarport/releases'))) {
    out.push(JSON.parse(await readFile(join(repo, 'tarport/releases', f), 'utf8')) as ReleaseRecord);
  }
  return out;
}

describe('foundation: every archive shape', () => {
  // each row: a shape a producer meets in the wild
  it.each([
    ['app-v1.tar.gz', 'docker save, gzip-compressed'],
    ['app-v1.tar.zst', 'docker save, zstd-compressed'],
    ['app-v1-oci.tar', 'Docker 25+ save (OCI layout), plain layer blobs'],
    ['app-v1-oci-gzip.tar', 'Docker 25+ save (OCI layout), gzip layer blobs (containerd store)'],
  ])('%s (%s) publishes and loads into an empty daemon', async (file) => {
    await emptyDaemon('consumer');
    const repo = join(await tempDir(), 'repo');
    const state = await tempDir();
    const push = await tarport(['push', '--init', fixture(file), '--to', repo]);
    expect(push.stderr).toContain('published tarport-fixture/app:1 v1');
    const p = await tarport(['pull', '--from', repo, '--state', state], consumerEnv);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stderr).toContain('0 already in the daemon');
    expect(await imageIdIn('consumer', 'tarport-fixture/app:1')).toBe(await imageIdIn('producer', 'tarport-fixture/app:1'));
    expect(await runIn('tarport-fixture/app:1', 'cat /app/hello.txt')).toBe('hello from v1');
  });

  it('docker save piped into push - publishes from standard input, loads and runs', async () => {
    await emptyDaemon('consumer');
    const repo = join(await tempDir(), 'repo');
    const state = await tempDir();
    const spool = await tempDir();
    const cmd = 'set -o pipefail; "$DOCKER" save tarport-fixture/app:1 | "$NODE" "$CLI" push --init - --to "$REPO"';
    const { stderr } = await run('bash', ['-c', cmd], {
      env: { ...process.env, DOCKER: env.docker, DOCKER_HOST: env.producer, NODE: process.execPath, CLI: join(ROOT, 'bin/tarport.js'), REPO: repo, TMPDIR: spool },
    });
    expect(stderr).toContain(`published tarport-fixture/app:1 v1 (image) from standard input to file://${repo}`);
    expect(await readdir(spool)).toEqual([]); // its copy of the input is gone, folder and all
    const p = await tarport(['pull', '--from', repo, '--state', state], consumerEnv);
    expect(p.code, p.stderr).toBe(0);
    expect(await imageIdIn('consumer', 'tarport-fixture/app:1')).toBe(await imageIdIn('producer', 'tarport-fixture/app:1'));
    expect(await runIn('tarport-fixture/app:1', 'cat /app/hello.txt')).toBe('hello from v1');
  });

  it.each([['app-export.tar'], ['app-export.tar.gz']])('the export archive %s is imported under its name and runs', async (file) => {
    const repo = join(await tempDir(), 'repo');
    const state = await tempDir();
    const noName = await tarport(['push', '--init', fixture(file), '--to', repo]);
    expect(noName.code).toBe(2);
    expect(noName.stderr).toMatch(/docker export.*--name NAME:TAG/);
    const push = await tarport(['push', '--init', fixture(file), '--to', repo, '--name', 'tarport-test/exported:1']);
    expect(push.code, push.stderr).toBe(0);
    const again = await tarport(['push', '--init', fixture(file), '--to', repo, '--name', 'tarport-test/exported:1']);
    expect(again.stderr).toContain('unchanged');
    const p = await tarport(['pull', '--from', repo, '--state', state], consumerEnv);
    expect(p.code, p.stderr).toBe(0);
    expect(await runIn('tarport-test/exported:1', 'cat /app/hello.txt; readlink /app/link-to-hello')).toBe('hello from v1\n/app/hello.txt');
  });

  it('an export release pulled with --platform linux/arm64: the load names the platform of the image the daemon made, and warns when that is not the one asked', async () => {
    const repo = join(await tempDir(), 'repo');
    const state = await tempDir();
    const ref = 'tarport-test/exported-arm:1';
    expect((await tarport(['push', '--init', fixture('app-export.tar'), '--to', repo, '--name', ref])).code).toBe(0);
    const p = await tarport(['pull', '--from', repo, '--state', state, '--platform', 'linux/arm64'], consumerEnv);
    expect(p.code, p.stderr).toBe(0);
    // the daemon's word on its image: Docker 20.10 (Debian 12) ignores the platform of an import
    // without its experimental features; later ones make it for the platform asked
    const made = await docker('consumer', 'image', 'inspect', '-f', '{{.Os}}/{{.Architecture}}', ref);
    expect(p.stderr).toContain(`loaded ${ref} v1 as `);
    expect(p.stderr).toContain(`into docker (${made})`);
    const warned = p.stderr.split('\n').filter((l) => l.includes('made the root file system an image for'));
    expect(warned.map((l) => l.slice(l.indexOf(ref)))).toEqual(
      made === 'linux/arm64' ? [] : [`${ref} v1: the docker runtime made the root file system an image for ${made}, not for the linux/arm64 asked (it ignored the platform: Docker 20.10 takes it only with its experimental features on); it is loaded as that`],
    );
    const again = await tarport(['pull', '--from', repo, '--state', state, '--platform', 'linux/arm64', '--json'], consumerEnv);
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { loaded: unknown[] }).loaded).toEqual([]);
  });

  it('skopeo reads the repository as an OCI layout', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    // Debian 12's skopeo (1.9) converts only gzip or uncompressed layers to docker-archive
    // (containers/image#1260, fixed in skopeo 1.14); zstd releases it copies to OCI destinations.
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--compress', 'gzip', '--name', 'tarport-test/skopeo:gz'])).code).toBe(0);
    expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo, '--name', 'tarport-test/skopeo:zst'])).code).toBe(0);
    const out = join(dir, 'out.tar');
    await runTool('skopeo', ['copy', `oci:${repo}:tarport-test/skopeo:gz`, `docker-archive:${out}:skopeo/app:1`]);
    await docker('consumer', 'load', '-i', out);
    expect(await runIn('skopeo/app:1', 'cat /app/hello.txt')).toBe('hello from v1');
    const ociOut = join(dir, 'oci-out');
    await runTool('skopeo', ['copy', `oci:${repo}:tarport-test/skopeo:zst`, `oci:${ociOut}:copied`]);
    expect(JSON.parse(await readFile(join(ociOut, 'index.json'), 'utf8')).manifests).toHaveLength(1);
  });
});

async function runTool(cmd: string, args: string[]): Promise<string> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { stdout } = await promisify(execFile)(cmd, args, { maxBuffer: 64 << 20 });
  return stdout;
}

describe('foundation: consumer safety', () => {
  it('refuses a replayed older catalog and an expired one (exit 3), with a loud override for expiry', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const state = join(dir, 'state');
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'tarport-test/safe:1'])).code).toBe(0);
    await copyFile(join(repo, 'tarport/catalog.json'), join(dir, 'old-catalog.json'));
    expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo, '--name', 'tarport-test/safe:1'])).code).toBe(0);
    expect((await tarport(['pull', '--from', repo, '--state', state], consumerEnv)).code).toBe(0);
    await copyFile(join(dir, 'old-catalog.json'), join(repo, 'tarport/catalog.json'));
    const replay = await tarport(['pull', '--from', repo, '--state', state], consumerEnv);
    expect(replay.code).toBe(3);
    expect(replay.stderr).toMatch(/sequence 1, lower than 2/);

    const repo2 = join(dir, 'repo2');
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo2, '--name', 'tarport-test/late:1', '--catalog-ttl', '1ms'])).code).toBe(0);
    await new Promise((r) => setTimeout(r, 20));
    const expired = await tarport(['pull', '--from', repo2, '--state', state], consumerEnv);
    expect(expired.code).toBe(3);
    expect(expired.stderr).toMatch(/expired.*--allow-expired/);
    const late = await tarport(['pull', '--from', repo2, '--state', state, '--allow-expired'], consumerEnv);
    expect(late.code).toBe(0);
    expect(late.stderr).toMatch(/warning: .*expired/);
  });

  it('refuses a record that does not match the digest the catalog pins (exit 3), loading nothing', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'tarport-test/tampered:1'])).code).toBe(0);
    const [rec] = (await filesBelow(join(repo, 'tarport/releases')));
    const p = join(repo, 'tarport/releases', rec!);
    await writeFile(p, (await readFile(p, 'utf8')).replace('"tarport"', '"tarport "'));
    const r = await tarport(['pull', '--from', repo, '--state', join(dir, 'state')], consumerEnv);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/digest mismatch/);
    await expect(docker('consumer', 'image', 'inspect', 'tarport-test/tampered:1')).rejects.toThrow();
    await rm(dir, { recursive: true, force: true });
  });
});

describe('tarport demo', () => {
  it('moves its two generated versions through a local repository into DOCKER_HOST, the second as one new layer', async () => {
    const r = await tarport(['demo', '--json'], { DOCKER_HOST: env.consumer });
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.steps).toHaveLength(2);
    const [first, second] = doc.steps;
    expect(first.pull.loaded[0].ref).toBe('tarport-demo/hello:latest');
    expect(second.pull.loaded[0].version).toBe(2);
    expect(second.pull.bytesFetched).toBeLessThan(first.pull.bytesFetched / 10);
    expect(await docker('consumer', 'image', 'inspect', '-f', '{{.Config.Cmd}}', 'tarport-demo/hello:latest')).toBe('[/hello.txt]');
  });
});
