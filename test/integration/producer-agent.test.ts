import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, open, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { WatchEvent } from '../../src/producer/index.js';
import { ROOT, docker, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// The producer agent with real file-system events, as a user runs it: `tarport watch DIR`.

const env = realEnv();

function startWatch(args: string[]) {
  const child: ChildProcess = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'watch', '--init', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: (WatchEvent & { time: string })[] = [];
  let buf = '';
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      events.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  const exited = new Promise<number>((r) => child.on('close', (code, sig) => r(code ?? (sig ? 128 : -1))));
  const until = async (p: (e: WatchEvent) => boolean, ms = 60_000) => {
    const end = Date.now() + ms;
    for (;;) {
      const e = events.find(p);
      if (e) return e;
      if (Date.now() > end) throw new Error(`no such event; events: ${JSON.stringify(events.slice(-6))}; stderr: ${stderr.slice(-400)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { child, events, until, exited };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every object under its final name holds what its name says: nothing half-visible. */
async function objectsIntact(repo: string): Promise<void> {
  const blobs = (await filesBelow(join(repo, 'blobs/sha256'))).filter((f) => !f.startsWith('.'));
  for (const b of blobs) {
    const hex = createHash('sha256').update(await readFile(join(repo, 'blobs/sha256', b))).digest('hex');
    expect(hex, `object ${b}`).toBe(b);
  }
}

async function versions(repo: string, name: string): Promise<number[]> {
  const r = await tarport(['ls', repo, '--json']);
  return JSON.parse(r.stdout).releases.filter((x: { name: string }) => x.name === name).map((x: { version: number }) => x.version);
}

describe('producer agent: tarport watch', () => {
  it('a slow writer is published once, after its last byte; a rename and a bad file beside good ones; a re-drop makes no new version', async () => {
    const dir = await tempDir();
    const drop = join(dir, 'drop');
    const repo = join(dir, 'repo');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(drop);
    const w = startWatch([drop, '--to', repo, '--settle', '400ms']);
    await w.until((e) => e.kind === 'watching');

    // a slow copy: four chunks with pauses longer than the settle time
    const data = await readFile(fixture('app-v1.tar'));
    const fh = await open(join(drop, 'slow.tar'), 'w');
    const quarter = Math.ceil(data.length / 4);
    let lastWrite = 0;
    for (let i = 0; i < 4; i++) {
      await fh.write(data.subarray(i * quarter, (i + 1) * quarter));
      await fh.sync();
      lastWrite = Date.now();
      if (i < 3) await sleep(1200);
    }
    await fh.close();
    const pub = await w.until((e) => e.kind === 'published' && e.file.endsWith('slow.tar'));
    expect(Date.parse((pub as unknown as { time: string }).time)).toBeGreaterThan(lastWrite);
    expect(w.events.filter((e) => e.kind === 'published' && e.file.endsWith('slow.tar'))).toHaveLength(1);

    // a file that appears by rename, and a bad file beside it
    await copyFile(fixture('app-v2.tar'), join(drop, '.incoming.part'));
    await writeFile(join(drop, 'junk.tar'), randomBytes(4096));
    await rename(join(drop, '.incoming.part'), join(drop, 'app-v2.tar'));
    await w.until((e) => e.kind === 'published' && e.file.endsWith('app-v2.tar'));
    await w.until((e) => e.kind === 'failed' && e.file.endsWith('junk.tar'));
    expect(await readFile(join(drop, 'failed', 'junk.tar.reason'), 'utf8')).toMatch(/not a tar archive/);

    // the same content dropped again: no new version, and it goes to done/ too
    await copyFile(fixture('app-v1.tar'), join(drop, 'again.tar'));
    const again = await w.until((e) => e.kind === 'published' && e.file.endsWith('again.tar'));
    expect((again as { releases: { status: string }[] }).releases[0]!.status).toBe('unchanged');
    expect(await versions(repo, 'tarport-fixture/app')).toEqual([1, 1]); // tags 1 and 2, one version each
    expect((await readdir(join(drop, 'done'))).sort()).toEqual(['again.tar', 'app-v2.tar', 'slow.tar']);
    expect(await readdir(drop)).toEqual(expect.arrayContaining(['done', 'failed']));
    expect((await readdir(drop)).filter((f) => f.endsWith('.tar'))).toEqual([]);

    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    // what it published runs in the consumer daemon
    const p = await tarport(['pull', 'tarport-fixture/app:2', '--from', repo, '--state', join(dir, 'state')], { DOCKER_HOST: env.consumer });
    expect(p.code, p.stderr).toBe(0);
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', 'tarport-fixture/app:2', '/bin/cat', '/app/v2.txt')).toBe('hello from v2');
  });

  it('kill -9 during a publish leaves nothing half-visible; the next start publishes the file once', async () => {
    const dir = await tempDir();
    const drop = join(dir, 'drop');
    const repo = join(dir, 'repo');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(drop);
    await copyFile(fixture('app-v1.tar'), join(drop, 'app.tar'));
    const w = startWatch([drop, '--to', repo, '--settle', '100ms', '--compress', 'gzip', '--name', 'tarport-test/crash:1']);
    await w.until((e) => e.kind === 'publishing');
    await sleep(150);
    w.child.kill('SIGKILL');
    await w.exited;
    await objectsIntact(repo);
    expect(await readdir(drop)).toContain('app.tar'); // not moved: it was not published
    const once = await tarport(['watch', '--init', drop, '--to', repo, '--once', '--settle', '100ms', '--compress', 'gzip', '--name', 'tarport-test/crash:1']);
    expect(once.code, once.stderr).toBe(0);
    await objectsIntact(repo);
    expect(await versions(repo, 'tarport-test/crash')).toEqual([1]);
    expect(await readdir(join(drop, 'done'))).toEqual(['app.tar']);
  });

  it('SIGTERM during a publish abandons it cleanly and exits 0; the file waits for the next run', async () => {
    const dir = await tempDir();
    const drop = join(dir, 'drop');
    const repo = join(dir, 'repo');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(drop);
    await copyFile(fixture('app-v1.tar'), join(drop, 'app.tar'));
    const w = startWatch([drop, '--to', repo, '--settle', '100ms', '--compress', 'gzip', '--name', 'tarport-test/term:1']);
    await w.until((e) => e.kind === 'publishing');
    const t = Date.now();
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    expect(Date.now() - t).toBeLessThan(8000); // within the launcher's 5 s, and the time to see it
    await objectsIntact(repo);
    const published = w.events.some((e) => e.kind === 'published');
    expect(await readdir(drop)).toContain(published ? 'done' : 'app.tar');
    const once = await tarport(['watch', '--init', drop, '--to', repo, '--once', '--settle', '100ms', '--name', 'tarport-test/term:1']);
    expect(once.code).toBe(0);
    expect(await versions(repo, 'tarport-test/term')).toEqual([1]);
  });

  it('--once: names from a sidecar and from --name-map; exit 2 when a file failed; an untagged archive says how to name it', async () => {
    const dir = await tempDir();
    const drop = join(dir, 'drop');
    const repo = join(dir, 'repo');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(drop);
    await copyFile(fixture('app-export.tar'), join(drop, 'rootfs-7.tar'));
    await copyFile(fixture('app-export.tar.gz'), join(drop, 'other.tar.gz'));
    await writeFile(join(drop, 'other.tar.gz.name'), 'tarport-test/sidecar:2024\n');
    await copyFile(fixture('app-export.tar'), join(drop, 'nameless.tar'));
    const r = await tarport(['watch', '--init', drop, '--to', repo, '--once', '--settle', '100ms', '--name-map', 'rootfs-{v}.tar=tarport-test/mapped:{v}']);
    expect(r.code).toBe(2);
    const ls = JSON.parse((await tarport(['ls', repo, '--json'])).stdout).releases.map((x: { name: string; tag: string }) => `${x.name}:${x.tag}`).sort();
    expect(ls).toEqual(['tarport-test/mapped:7', 'tarport-test/sidecar:2024']);
    expect(await readFile(join(drop, 'failed', 'nameless.tar.reason'), 'utf8')).toContain('Name it: put NAME:TAG into a file beside it called <file>.name, or run the agent with --name-map PATTERN=NAME:TAG.');
    expect((await readdir(join(drop, 'done'))).sort()).toEqual(['other.tar.gz', 'other.tar.gz.name', 'rootfs-7.tar']);
  });
});
