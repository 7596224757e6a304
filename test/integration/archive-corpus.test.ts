import { spawn } from 'node:child_process';
import { readdir, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveCases } from '../corpus/archives.js';
import { measured } from '../corpus/measure.js';
import { ROOT, filesBelow, tempDir } from '../helpers.js';

// The hostile archive corpus (test/corpus/archives.ts) against `tarport push`: every case exit 2, a
// message naming the archive and its fault, nothing published, nothing written beside the input,
// memory and time bounded. Needs no daemon.

/** Waits until process `pid` has `file` open. */
async function archiveOpenBy(pid: number, file: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === file) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`process ${pid} did not open ${file} within ${ms} ms`);
}

/** Peak RSS of any case: the CLI alone is ~70 MiB; the worst case indexes 65536 entries. */
const PEAK_MIB = 192;
/**
 * Wall time of any case: the worst (a million headers, 512 MB read) took 38 s with 8 test runs
 * sharing 2 cores (load 17); the bound catches an endless loop, not a slow disk.
 */
const TIME_MS = 90_000;

describe('hostile archive corpus: push refuses each case', () => {
  let dir: string;
  const seen: string[] = [];
  beforeAll(async () => {
    dir = await tempDir('tarport-archive-corpus-');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(archiveCases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const file = await c.make(dir);
    const before = await filesBelow(dir);
    const repo = join(await tempDir(), 'repo');
    const r = await measured(['push', '--init', file, '--to', repo]);
    seen.push(`${c.name}: ${r.ms} ms, ${r.peakMiB} MiB`);
    console.log(seen.at(-1));
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toMatch(c.fault);
    expect(await archiveFilesBelow(repo)).toEqual([]);
    expect(await filesBelow(dir)).toEqual(before);
    expect(r.peakMiB).toBeLessThan(PEAK_MIB);
    expect(r.ms).toBeLessThan(TIME_MS);
    await rm(file);
  });
});

describe('SIGTERM while the worst archive is indexed', () => {
  it('ends push within 10 s of the signal (a second later at most here), publishing nothing', async () => {
    const dir = await tempDir('tarport-archive-corpus-');
    try {
      const file = await archiveCases.find((c) => c.name === 'million-tiny-entries.tar')!.make(dir);
      const repo = join(dir, 'repo');
      const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'push', '--init', file, '--to', repo], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<{ code: number | null; at: number }>((r) => child.on('close', (code) => r({ code, at: Date.now() })));
      // the index of 1,000,000 headers takes seconds: once the CLI has the archive open (it opens it
      // only to index it), the signal lands in the middle of that
      await archiveOpenBy(child.pid!, file, 60_000);
      await new Promise((r) => setTimeout(r, 300));
      const sent = Date.now();
      child.kill('SIGTERM');
      const { code, at } = await exited;
      console.log(`SIGTERM to exit during indexing: ${at - sent} ms (exit ${code})`);
      expect(at - sent).toBeLessThan(5000);
      expect(code).not.toBe(0);
      expect(code).not.toBeNull(); // ended by itself, not by the signal's default action
      expect(stderr).toMatch(/interrupted/);
      expect(await archiveFilesBelow(repo)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** What a refused push (with --init) left in the repository: nothing, its identity included (that
 * comes with the first object kept). */
async function archiveFilesBelow(repo: string): Promise<string[]> {
  return filesBelow(repo);
}
