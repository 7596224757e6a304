import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, fixture, realEnv, tempDir } from '../helpers.js';

// docs/install.md: the single executable runs every command with no Node and no node_modules. It is
// built here by scripts/build-sea for both architectures and run with a PATH that holds no node, from
// a folder outside the repository; the arm64 file runs under qemu-user with Debian's arm64 libc
// (both installed by scripts/lib/common.sh).
const run = promisify(execFile);
const env = realEnv();
let dir: string;
let exe: string;
let arm64: string;

beforeAll(async () => {
  dir = await tempDir();
  // built from a copy of the working tree and of the dist/ that scripts/test built from it
  // (SEA_PREBUILT: a second tsc and bundle cost the suite ~25 CPU seconds), so that nothing here
  // touches the dist/ the test files beside this one run the CLI from (node_modules hard-linked, as
  // in package.test.ts, which builds from a clean copy as `npm pack` does)
  const copy = join(dir, 'src');
  await mkdir(copy);
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'bin', 'src', 'scripts', 'dist']) await run('cp', ['-a', join(ROOT, f), copy]);
  await run('cp', ['-al', join(ROOT, 'node_modules'), copy]);
  await run('bash', [join(copy, 'scripts/build-sea'), 'x64', 'arm64'], { env: { ...process.env, SEA_OUT: join(dir, 'sea'), SEA_PREBUILT: '1' }, timeout: 600_000, maxBuffer: 64 << 20 });
  exe = join(dir, 'sea', 'tarport-linux-x64');
  arm64 = join(dir, 'sea', 'tarport-linux-arm64');
}, 660_000);

/** The executable with nothing of Node around it: no node on PATH, no NODE_* variables. */
function sea(args: string[], extra: Record<string, string> = {}) {
  return run(exe, args, { cwd: dir, env: { PATH: '/nonexistent', HOME: dir, ...extra }, timeout: 300_000, maxBuffer: 64 << 20 });
}

/** Debian 12's qemu-user-static names it -static; Debian 13's qemu-user (static too) does not. */
function qemuAarch64(): string {
  const found = ['/usr/bin/qemu-aarch64-static', '/usr/bin/qemu-aarch64'].find((p) => existsSync(p));
  if (!found) throw new Error('qemu-aarch64 is not installed: scripts/lib/common.sh installs it (tp_install)');
  // without it qemu stops at once with "Could not open '/lib/ld-linux-aarch64.so.1'"
  if (!existsSync('/lib/ld-linux-aarch64.so.1')) throw new Error("Debian's arm64 libc is not installed: scripts/lib/common.sh installs it (tp_install_arm64)");
  return found;
}

describe('the single executable', () => {
  it('is one file that runs --help, keys generate, push and ls with no node on PATH', async () => {
    expect((await stat(exe)).size).toBeGreaterThan(40 << 20);
    await expect(run('/bin/sh', ['-c', 'command -v node'], { env: { PATH: '/nonexistent' } })).rejects.toMatchObject({ code: 127 });
    expect((await sea(['--help'])).stdout).toContain('Usage: tarport');
    await sea(['keys', 'generate', '--uid', 'sea <sea@example.invalid>', '--out', join(dir, 'k'), '--type', 'ecc']);
    const push = await sea(['push', '--init', fixture('app-v1.tar'), '--to', join(dir, 'repo'), '--sign-key', join(dir, 'k.sec.asc'), '--json']);
    expect(JSON.parse(push.stdout)).toMatchObject({ failed: [], pushed: [{ releases: [expect.objectContaining({ status: 'published' })] }] });
    const ls = await sea(['ls', join(dir, 'repo'), '--json']);
    expect(JSON.stringify(JSON.parse(ls.stdout))).toContain('app');
    // zstd layers, written and read back by the zstd-napi binary inside the file (check exits 0)
    await sea(['check', join(dir, 'repo'), '--trust', join(dir, 'k.pub.asc')]);
  }, 300_000);

  it("carries zstd-napi's binary and loads it from a private cache copy named by its sha256", async () => {
    const shipped = await readFile(join(dir, 'src', 'dist/bundle/native/zstd-napi-linux-x64.node'));
    const copy = join(dir, '.cache', 'tarport', 'native', `zstd-napi-${createHash('sha256').update(shipped).digest('hex')}.node`);
    const doc = JSON.parse((await sea(['version', '--json'])).stdout) as { executable: boolean; zstd: unknown };
    expect(doc.executable).toBe(true);
    expect(doc.zstd).toEqual({ codec: 'zstd-napi', binding: { source: 'executable', path: copy }, notLoaded: [] });
    expect((await stat(join(dir, '.cache', 'tarport', 'native'))).mode & 0o777).toBe(0o700);
    // a copy whose bytes are not what the file carries is replaced before anything is loaded
    await writeFile(copy, 'not the binary');
    expect((JSON.parse((await sea(['version', '--json'])).stdout) as { zstd: unknown }).zstd).toEqual({ codec: 'zstd-napi', binding: { source: 'executable', path: copy }, notLoaded: [] });
    expect((await readFile(copy)).equals(shipped)).toBe(true);
    // $XDG_CACHE_HOME is the user's cache where it is set; where no cache folder can be made, the temp folder
    const xdg = join(dir, 'xdg');
    const inXdg = JSON.parse((await sea(['version', '--json'], { XDG_CACHE_HOME: xdg })).stdout) as { zstd: { binding?: { path: string } } };
    expect(inXdg.zstd.binding?.path).toBe(join(xdg, 'tarport', 'native', basename(copy)));
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const noHome = JSON.parse((await sea(['version', '--json'], { HOME: fixture('app-v1.tar'), TMPDIR: tmp })).stdout) as { zstd: { binding?: { path: string } } };
    expect(noHome.zstd.binding?.path).toBe(join(tmp, `tarport-native-${process.getuid!()}`, basename(copy)));
  }, 120_000);

  it('carries the S3 SDK: pushes to s3rver and lists the release there', async () => {
    const s3 = ['--s3-endpoint', process.env.TP_S3_ENDPOINT ?? 'TP_S3_ENDPOINT unset: run through scripts/test', '--s3-path-style'];
    const creds = { AWS_ACCESS_KEY_ID: process.env.TP_S3_ACCESS_KEY ?? '', AWS_SECRET_ACCESS_KEY: process.env.TP_S3_SECRET_KEY ?? '' };
    const url = `s3://${process.env.TP_S3_BUCKET ?? 'tarport'}/sea-${Date.now()}`;
    await sea(['push', '--init', fixture('app-v1.tar'), '--to', url, '--name', 'sea/s3:1', ...s3], creds);
    const ls = await sea(['ls', url, '--json', ...s3], creds);
    expect((JSON.parse(ls.stdout) as { releases: { name: string }[] }).releases.map((r) => r.name)).toEqual(['sea/s3']);
  }, 300_000);

  it('runs the demo flow into the consumer daemon', async () => {
    const r = await sea(['demo', '--json'], { DOCKER_HOST: env.consumer });
    const doc = JSON.parse(r.stdout) as { steps?: unknown[] };
    expect(doc.steps?.length).toBe(2);
  }, 300_000);

  it('for arm64 runs --version, a push and a pull into Docker under qemu, with no node on PATH', async () => {
    // the file is an arm64 ELF (e_machine 183, AArch64), not the host's binary under another name
    const head = (await readFile(arm64)).subarray(0, 20);
    expect([head.subarray(1, 4).toString(), head.readUInt16LE(18)]).toEqual(['ELF', 183]);
    const qemu = qemuAarch64();
    const arm = (args: string[], extra: Record<string, string> = {}) =>
      run(qemu, [arm64, ...args], { cwd: dir, env: { PATH: '/nonexistent', HOME: dir, ...extra }, timeout: 300_000, maxBuffer: 64 << 20 });
    const version = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect((await arm(['--version'])).stdout.trim()).toBe(version);
    // its own zstd-napi binary (cross-compiled by scripts/build-native) loads under qemu
    const zstd = (JSON.parse((await arm(['version', '--json'])).stdout) as { zstd: { codec?: string; binding?: { source: string; path: string } } }).zstd;
    expect([zstd.codec, zstd.binding?.source, basename(zstd.binding?.path ?? '')]).toEqual(['zstd-napi', 'executable', expect.stringMatching(/^zstd-napi-[0-9a-f]{64}\.node$/)]);
    const repo = join(dir, 'repo-arm64');
    const push = await arm(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'sea/arm64:1', '--json']);
    expect(JSON.parse(push.stdout)).toMatchObject({ failed: [], pushed: [{ releases: [expect.objectContaining({ status: 'published' })] }] });
    const pull = await arm(['pull', 'sea/arm64:1', '--from', repo, '--state', join(dir, 'state-arm64'), '--json'], { DOCKER_HOST: env.consumer });
    expect(JSON.parse(pull.stdout)).toMatchObject({ loaded: [{ ref: 'sea/arm64:1', version: 1 }], refused: [] });
    const inspect = await run(env.docker, ['image', 'inspect', 'sea/arm64:1', '--format', '{{.Id}}'], { env: { ...process.env, DOCKER_HOST: env.consumer } });
    expect(inspect.stdout.trim()).toBe((JSON.parse(pull.stdout) as { loaded: { imageId: string }[] }).loaded[0]!.imageId);
    await run(env.docker, ['rmi', 'sea/arm64:1'], { env: { ...process.env, DOCKER_HOST: env.consumer } });
  }, 400_000);
});
