import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, docker, emptyDaemon, fixture, realEnv, tempDir } from '../helpers.js';

// docs/install.md: `npm pack` builds first and ships what runs; the tarball installs with
// `npm install -g` on a host with no network and no compiler, and the installed copy works.
const run = promisify(execFile);
const env = realEnv();
const netns = `tp-pkg-${randomBytes(3).toString('hex')}`;
let dir: string;
let tgz: string;

beforeAll(async () => {
  dir = await tempDir();
  // pack a copy of the working tree: prepack cleans and rebuilds dist/, which the other test files
  // run from meanwhile (node_modules hard-linked: pack leaves out parts of the copy's only)
  const copy = join(dir, 'src');
  await mkdir(copy);
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'LICENSE', 'README.md', 'bin', 'src', 'docs', 'scripts']) await run('cp', ['-a', join(ROOT, f), copy]);
  await run('cp', ['-al', join(ROOT, 'node_modules'), copy]);
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: copy, timeout: 600_000, maxBuffer: 64 << 20 });
  tgz = join(dir, (JSON.parse(stdout) as { filename: string }[])[0]!.filename);
  await run('ip', ['netns', 'add', netns]);
}, 660_000);

afterAll(async () => {
  await run('ip', ['netns', 'del', netns]).catch(() => undefined);
});

describe('the npm package', () => {
  it('ships dist, bin, docs, LICENSE and its dependencies; no source maps, no sources, no compiled-at-install helpers', async () => {
    const { stdout } = await run('tar', ['tzf', tgz], { maxBuffer: 64 << 20 });
    const files = stdout.split('\n').filter(Boolean);
    // zstd-napi's compiled binary for both architectures, with its licences (scripts/build-native);
    // not the zstd-napi package, whose install script downloads or compiles
    const native = ['zstd-napi-linux-x64.node', 'zstd-napi-linux-arm64.node', 'LICENSE.zstd-napi', 'NOTICE.zstd-napi', 'LICENSE.zstd'].map((f) => `dist/bundle/native/${f}`);
    for (const f of ['bin/tarport.js', 'dist/bundle/main.js', 'dist/bundle/zstdworker.js', 'dist/bundle/copyworker.js', ...native, 'LICENSE', 'README.md', 'docs/install.md', 'docs/cli.md', 'node_modules/openpgp/package.json', 'node_modules/ssh2/package.json', 'node_modules/@aws-sdk/client-s3/package.json']) {
      expect(files, f).toContain(`package/${f}`);
    }
    expect(files.filter((f) => /^package\/(dist|bin)\/.*\.map$/.test(f))).toEqual([]);
    expect(files.filter((f) => f.startsWith('package/src/') || f.startsWith('package/test/'))).toEqual([]);
    // what runs is the bundle (scripts/bundle.mjs): tsc's file-per-module output stays at home
    expect(files.filter((f) => f.startsWith('package/dist/') && !f.startsWith('package/dist/bundle/'))).toEqual([]);
    expect(files.filter((f) => /^package\/node_modules\/(cpu-features|buildcheck|zstd-napi|typescript|vitest)\//.test(f))).toEqual([]);
    const { stdout: license } = await run('tar', ['xzf', tgz, '-O', 'package/LICENSE']);
    expect(license).toContain('Apache License\n                           Version 2.0, January 2004');
    const pkg = JSON.parse((await run('tar', ['xzf', tgz, '-O', 'package/package.json'])).stdout) as { repository?: unknown; engines?: { node?: string } };
    expect(pkg.repository).toBeTruthy();
    expect(pkg.engines?.node).toBe('>=20.19');
  });

  it('installs with no network, no compiler and a fresh npm cache, then pushes and pulls', async () => {
    // a PATH of node, npm and sh only: no cc, make or python for node-gyp to find
    const bin = join(dir, 'bin');
    await mkdir(bin);
    await symlink(process.execPath, join(bin, 'node'));
    await symlink((await run('sh', ['-c', 'readlink -f "$(command -v npm)"'])).stdout.trim(), join(bin, 'npm'));
    await symlink('/bin/sh', join(bin, 'sh'));
    for (const tool of ['cc', 'gcc', 'make', 'python3', 'python']) await expect(run('sh', ['-c', `command -v ${tool}`], { env: { PATH: bin } })).rejects.toMatchObject({ code: 127 });
    const prefix = join(dir, 'prefix');
    const home = join(dir, 'home');
    await mkdir(home);
    const base = { PATH: bin, HOME: home };
    const inNs = (cmd: string, args: string[], extra: Record<string, string> = {}) =>
      run('ip', ['netns', 'exec', netns, 'env', '-i', ...Object.entries({ ...base, ...extra }).map(([k, v]) => `${k}=${v}`), cmd, ...args], { timeout: 300_000, maxBuffer: 64 << 20 });
    // the namespace has no route out: the registry cannot be reached from it
    await expect(inNs('node', ['-e', "require('https').get('https://registry.npmjs.org/', () => process.exit(0)).on('error', () => process.exit(7))"])).rejects.toMatchObject({ code: 7 });

    const t0 = Date.now();
    await inNs(join(bin, 'npm'), ['install', '-g', '--prefix', prefix, '--cache', join(dir, 'cache'), '--no-fund', '--no-audit', tgz]);
    const seconds = (Date.now() - t0) / 1000;
    expect(seconds).toBeLessThan(240);
    const tp = join(prefix, 'bin', 'tarport');
    expect((await inNs(tp, ['--help'])).stdout).toContain('Usage: tarport');
    expect(await readdir(join(prefix, 'lib', 'node_modules', 'tarport', 'node_modules'))).not.toContain('zstd-napi');
    // the S3 SDK came with the package: an s3:// location loads it and fails only on the unreachable endpoint
    const s3 = await inNs(tp, ['ls', 's3://pkg-bucket/r', '--s3-endpoint', 'http://127.0.0.1:1', '--s3-path-style'], { AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's' }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(s3.code, s3.stderr).toBe(1);
    expect(s3.stderr).toMatch(/s3:\/\/pkg-bucket\/r .*(ECONNREFUSED|ENETUNREACH)/);

    // zstd comes from the binary the package carries, on every Node (20 included: its zlib has none)
    const installed = join(prefix, 'lib', 'node_modules', 'tarport');
    const version = JSON.parse((await inNs(tp, ['version', '--json'])).stdout) as { zstd: unknown };
    expect(version.zstd).toEqual({ codec: 'zstd-napi', binding: { source: 'shipped', path: join(installed, 'dist/bundle/native', `zstd-napi-linux-${process.arch}.node`) }, notLoaded: [] });
    // a push with the default --compress stores zstd layers, without a warning, and a pull loads them
    const repo = join(dir, 'repo');
    const plain = await inNs(tp, ['push', '--init', '--json', fixture('app-v1.tar'), '--to', repo, '--name', 'pkg/app:1']);
    expect(plain.stderr).not.toContain('zstd is not available');
    // what the layers were stored as, by their first bytes: zstd 28b52ffd (gzip would be 1f8b)
    const magics = new Set<string>();
    for (const f of await readdir(join(repo, 'blobs/sha256'))) magics.add((await readFile(join(repo, 'blobs/sha256', f))).subarray(0, 4).toString('hex'));
    expect(magics.has('28b52ffd')).toBe(true);
    expect([...magics].filter((m) => m.startsWith('1f8b'))).toEqual([]);
    await emptyDaemon('consumer');
    await inNs(tp, ['pull', 'pkg/app:1', '--from', repo, '--state', join(dir, 'state')], { DOCKER_HOST: env.consumer });
    expect(await docker('consumer', 'images', '-q', 'pkg/app:1')).not.toBe('');
  }, 600_000);
});
