import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, docker, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// The operator's view of a pull against a real daemon: one JSON document with what loaded and what
// was refused, and a progress line only on a terminal.
const env = realEnv();

/** script(1) gives the command a pseudo-terminal; returns everything it wrote there. */
function onTerminal(args: string[], extraEnv: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const cmd = `${process.execPath} ${join(ROOT, 'bin/tarport.js')} ${args.join(' ')}`;
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...extraEnv } });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('pull as an operator sees it', () => {
  it('pull --json with one release refused prints one document: what loaded and what was refused, side by side', async () => {
    const id = randomBytes(3).toString('hex');
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const good = `tarport-test/ops-good-${id}:1`;
    const bad = `tarport-test/ops-bad-${id}:1`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', good])).code).toBe(0);
    expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo, '--name', bad])).code).toBe(0);
    const record = (await filesBelow(join(repo, 'tarport/releases'))).find((f) => f.includes(`ops-bad-${id}`) && f.endsWith('.json'));
    expect(record).toBeDefined();
    await appendFile(join(repo, 'tarport/releases', record!), ' ');
    const r = await tarport(['pull', '--from', repo, '--state', join(dir, 'st'), '--json'], { DOCKER_HOST: env.consumer });
    expect(r.code).toBe(3);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const doc = JSON.parse(lines[0]!) as { loaded: { ref: string }[]; refused: { ref: string; code: string }[] };
    expect(doc.loaded.map((l) => l.ref)).toEqual([good]);
    expect(doc.refused.map((f) => [f.ref, f.code])).toEqual([[bad, 'DIGEST_MISMATCH']]);
    expect(r.stderr).toContain(`tarport: error: refused ${bad} v1`);
    expect(await docker('consumer', 'image', 'inspect', '-f', '{{.Id}}', good)).toMatch(/^sha256:/);
  });

  it('pull --quiet --json with a failing --hook: the failure shows on stderr and in the document, the exit stays 0', async () => {
    const id = randomBytes(3).toString('hex');
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const ref = `tarport-test/ops-hook-${id}:1`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', ref])).code).toBe(0);
    const r = await tarport(['pull', '--from', repo, '--state', join(dir, 'st'), '--hook', 'echo restart refused; exit 4', '--quiet', '--json'], { DOCKER_HOST: env.consumer });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('hook "echo restart refused; exit 4" failed (exit 4): restart refused');
    const doc = JSON.parse(r.stdout) as { loaded: { ref: string }[]; hooks: { ref: string; ok: boolean; message: string }[] };
    expect(doc.loaded.map((l) => l.ref)).toEqual([ref]);
    expect(doc.hooks).toEqual([{ ref, version: 1, ok: false, message: 'hook "echo restart refused; exit 4" failed (exit 4): restart refused' }]);
  });

  it('on a terminal, push and pull show a progress line; in a log, none', async () => {
    const id = randomBytes(3).toString('hex');
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const ref = `tarport-test/ops-progress-${id}:1`;
    const push = await onTerminal(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', ref], {});
    expect(push.code, push.out).toBe(0);
    expect(push.out).toMatch(/push \S+app-v1\.tar: [\d.]+ (B|KiB|MiB) written, [\d.]+ (B|KiB|MiB)\/s, \d+ s, \d+ layer\(s\) stored/);
    const pull = await onTerminal(['pull', '--from', repo, '--state', join(dir, 'st')], { DOCKER_HOST: env.consumer });
    expect(pull.code, pull.out).toBe(0);
    expect(pull.out).toMatch(new RegExp(`pull ${ref} v1: [\\d.]+ (B|KiB|MiB) fetched, [\\d.]+ (B|KiB|MiB)/s, \\d+ s`));
    const log = await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo, '--name', ref]);
    expect(log.code).toBe(0);
    expect(log.stderr).not.toMatch(/ written, .*\/s/);
    const pullLog = await tarport(['pull', '--from', repo, '--state', join(dir, 'st')], { DOCKER_HOST: env.consumer });
    expect(pullLog.code, pullLog.stderr).toBe(0);
    expect(pullLog.stderr).not.toMatch(/ fetched, .*\/s/);
  });
});
