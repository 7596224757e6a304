import { execFile } from 'node:child_process';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, fixture, realEnv, tempDir } from '../helpers.js';

// docs/install.md: the single executable runs every command with no Node and no node_modules. It is
// built here by scripts/build-sea (x64: the arm64 file cannot run on this host) and run with a PATH
// that holds no node, from a folder outside the repository.
const run = promisify(execFile);
const env = realEnv();
let dir: string;
let exe: string;

beforeAll(async () => {
  dir = await tempDir();
  // built from a copy of the working tree: build-sea rebuilds dist/, which the test files running
  // beside this one run the CLI from meanwhile (node_modules hard-linked, as in package.test.ts)
  const copy = join(dir, 'src');
  await mkdir(copy);
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'bin', 'src', 'scripts']) await run('cp', ['-a', join(ROOT, f), copy]);
  await run('cp', ['-al', join(ROOT, 'node_modules'), copy]);
  await run('bash', [join(copy, 'scripts/build-sea'), 'x64'], { env: { ...process.env, SEA_OUT: join(dir, 'sea') }, timeout: 600_000, maxBuffer: 64 << 20 });
  exe = join(dir, 'sea', 'tarport-linux-x64');
}, 660_000);

/** The executable with nothing of Node around it: no node on PATH, no NODE_* variables. */
function sea(args: string[], extra: Record<string, string> = {}) {
  return run(exe, args, { cwd: dir, env: { PATH: '/nonexistent', HOME: dir, ...extra }, timeout: 300_000, maxBuffer: 64 << 20 });
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
    // zstd layers, written and read back by Node 24's own zstd inside the file (check exits 0)
    await sea(['check', join(dir, 'repo'), '--trust', join(dir, 'k.pub.asc')]);
  }, 300_000);

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
});
