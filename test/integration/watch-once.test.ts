import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { dockerSave, sha, tarBytes } from '../corpus/tarwriter.js';
import { ROOT, tarport, tempDir } from '../helpers.js';

// `watch --once` tells cron the truth: it waits (bounded by --settle and --give-up) for files still
// being written, and names what it leaves for the next run, with exit 75 apart from 0 "all published".
// Synthetic archives (test/corpus/tarwriter.ts): no daemon needed.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup() {
  const dir = await tempDir();
  const drop = join(dir, 'drop');
  await mkdir(drop);
  return { drop, repo: join(dir, 'repo') };
}

/** Writes `bytes` into `path` in `parts` pieces, `gapMs` apart. */
async function slowWrite(path: string, bytes: Buffer, parts: number, gapMs: number): Promise<number> {
  await writeFile(path, '');
  const step = Math.ceil(bytes.length / parts);
  for (let i = 0; i < parts; i++) {
    await appendFile(path, bytes.subarray(i * step, (i + 1) * step));
    if (i < parts - 1) await sleep(gapMs);
  }
  return Date.now();
}

describe('watch --once', () => {
  it('waits for a file still being written, then publishes it: exit 0', async () => {
    const { drop, repo } = await setup();
    const archive = tarBytes(dockerSave('corpus/slow:1').items);
    const writing = slowWrite(join(drop, 'slow.tar'), archive, 6, 300);
    await sleep(100);
    const r = await tarport(['watch', '--init', drop, '--to', repo, '--once', '--settle', '700ms', '--give-up', '30s']);
    const lastWrite = await writing;
    expect(r.code, r.stderr).toBe(0);
    expect(await readdir(join(drop, 'done'))).toEqual(['slow.tar']);
    expect(Date.now()).toBeGreaterThan(lastWrite);
    const ls = JSON.parse((await tarport(['ls', repo, '--json'])).stdout);
    expect(ls.releases.map((x: { name: string }) => x.name)).toEqual(['corpus/slow']);
  });

  it('a file still being written when --give-up runs out is named and left, exit 75; a ready file beside it is published first', async () => {
    const { drop, repo } = await setup();
    await writeFile(join(drop, 'ready.tar'), tarBytes(dockerSave('corpus/ready:1').items));
    await utimes(join(drop, 'ready.tar'), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    const writing = slowWrite(join(drop, 'busy.tar'), tarBytes(dockerSave('corpus/busy:1').items), 40, 200);
    await sleep(100);
    const t0 = Date.now();
    const r = await tarport(['watch', '--init', drop, '--to', repo, '--once', '--settle', '1s', '--give-up', '3s', '--json']);
    const ms = Date.now() - t0;
    await writing;
    expect(r.code, r.stderr).toBe(75);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; file: string; reason?: string });
    expect(events.filter((e) => e.kind === 'published').map((e) => e.file)).toEqual([join(drop, 'ready.tar')]);
    const left = events.filter((e) => e.kind === 'left');
    expect(left.map((e) => e.file)).toEqual([join(drop, 'busy.tar')]);
    expect(left[0]!.reason).toMatch(/still being written/);
    expect(await readdir(drop)).toContain('busy.tar');
    expect(ms).toBeLessThan(3000 + 10_000); // bounded by --give-up (plus start-up on a loaded machine)
  });

  it('an archive that stops growing before it ends is waited for until --give-up, then left (exit 75)', async () => {
    const { drop, repo } = await setup();
    const archive = tarBytes(dockerSave('corpus/cut:1').items);
    await writeFile(join(drop, 'cut.tar'), archive.subarray(0, 1024));
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'watch', '--init', drop, '--to', repo, '--once', '--settle', '300ms', '--give-up', '6s'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = new Promise<number>((res) => child.on('close', (c) => res(c ?? -1)));
    // grows once more after the run found it incomplete (its first attempt), then stops short of its end
    for (let i = 0; i < 600 && !stderr.includes('publishing'); i++) await sleep(50);
    // well after the run began: the growth must move its --give-up time past the run's own deadline
    // (run start + --give-up), or the two fall within milliseconds and either ending may come (exit 2)
    await sleep(1000);
    await appendFile(join(drop, 'cut.tar'), archive.subarray(1024, 2048));
    const r = { code: await code, stderr };
    expect(r.code, r.stderr).toBe(75);
    expect(r.stderr).toContain(join(drop, 'cut.tar'));
    expect(r.stderr).toMatch(/left for the next run: the archive does not end yet \(.*truncated/);
    expect(await readdir(drop)).toContain('cut.tar');
  });

  it('an archive that stayed incomplete and still for --give-up goes to failed/ with its reason (exit 2)', async () => {
    const { drop, repo } = await setup();
    await writeFile(join(drop, 'cut.tar'), tarBytes(dockerSave('corpus/cut:1').items).subarray(0, 2048));
    await utimes(join(drop, 'cut.tar'), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    const r = await tarport(['watch', '--init', drop, '--to', repo, '--once', '--settle', '200ms', '--give-up', '30s']);
    expect(r.code, r.stderr).toBe(2);
    expect(await readdir(join(drop, 'failed'))).toEqual(['cut.tar', 'cut.tar.reason']);
  });

  it('an archive that grows again while the run waits is published: exit 0', async () => {
    const { drop, repo } = await setup();
    const archive = tarBytes(dockerSave('corpus/paused:1').items);
    await writeFile(join(drop, 'paused.tar'), archive.subarray(0, 2048));
    await utimes(join(drop, 'paused.tar'), new Date(Date.now() - 2000), new Date(Date.now() - 2000));
    const run = tarport(['watch', '--init', drop, '--to', repo, '--once', '--settle', '300ms', '--give-up', '30s']);
    await sleep(2500); // the run found it incomplete and waits for it to grow
    await appendFile(join(drop, 'paused.tar'), archive.subarray(2048));
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(await readdir(join(drop, 'done'))).toEqual(['paused.tar']);
  });

  it('a repository whose disk fills keeps the archive for the next run (exit 1, IO), never failed/ as a bad archive', async () => {
    // a real full disk: a tmpfs of 4 MiB (the suite runs as root) under an archive of a 6 MiB layer
    const { drop } = await setup();
    const disk = await tempDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', disk]);
    onTestFinished(() => void execFileSync('umount', ['-l', disk]));
    const repo = join(disk, 'repo');
    expect((await tarport(['init', repo])).code).toBe(0);
    const layer = tarBytes([{ name: 'data.bin', data: randomBytes(6 << 20) }]);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] } }));
    const archive = tarBytes([
      { name: `${sha(config)}.json`, data: config },
      { name: 'l/layer.tar', data: layer },
      { name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: `${sha(config)}.json`, RepoTags: ['corpus/full:1'], Layers: ['l/layer.tar'] }])) },
    ]);
    await writeFile(join(drop, 'full.tar'), archive);
    await utimes(join(drop, 'full.tar'), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    const r = await tarport(['watch', drop, '--to', repo, '--once', '--settle', '200ms', '--compress', 'none']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('no space left on device; free space, then run again');
    expect((await readdir(drop)).filter((f) => f.endsWith('.tar'))).toEqual(['full.tar']);
    expect(await readdir(join(drop, 'failed'))).toEqual([]);
  });
});
