import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { StateStore, takeLock } from '../../src/consumer/state.js';
import { ROOT, procStartOf, tempDir } from '../helpers.js';

/** A pid that is certainly not running: a child that already exited (a tiny program, not Node). */
function deadPid(): number {
  const r = spawnSync('true');
  return r.pid!;
}

/** A lock holder process taking part in one trial per folder, all at once; a result per folder. */
function child(dirs: string[], rounds: number, dead: number, crashEvery: number): Promise<{ overlaps: number; held: number }[]> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [join(ROOT, 'test/lockholder.mjs'), dirs.join('\n'), String(rounds), String(dead), String(crashEvery)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`lock holder exited ${code}`))));
  });
}

describe('the consumer lock', () => {
  it('is exclusive: 6 processes started together, many rounds, dead holders taken over, never two holders', async () => {
    if (!existsSync(join(ROOT, 'dist/consumer/state.js'))) throw new Error('npm run build first: the lock holders run the built code');
    const dead = deadPid();
    // three trials (a lock folder each) run at the same time: a waiter sleeps 100-200 ms between
    // tries, so a trial is mostly waiting, and three of them wait together. Each of the 6 processes
    // takes part in all three trials, so every trial is still 6 processes racing for one lock, for
    // the CPU of 6 process starts instead of 18
    const dirs = await Promise.all([0, 1, 2].map(() => tempDir('tarport-lock-')));
    // every trial starts with a stale lock: all of them race to take it over
    for (const dir of dirs) await writeFile(join(dir, 'lock'), `${dead}\n`);
    const results = await Promise.all(Array.from({ length: 6 }, () => child(dirs, 20, dead, 5)));
    for (const n of [0, 1, 2]) {
      const trial = results.map((r) => r[n]!);
      expect(trial.map((r) => r.overlaps), `trial ${n}`).toEqual(Array(6).fill(0));
      expect(trial.reduce((a, r) => a + r.held, 0), `trial ${n}`).toBe(6 * 20);
    }
  }, 120_000);

  it('never exists empty, names its holder and when it started, and is gone after release', async () => {
    const dir = await tempDir('tarport-lock-');
    const release = await new StateStore(dir).lock(0);
    expect(await readFile(join(dir, 'lock'), 'utf8')).toBe(`${process.pid} ${await procStartOf(process.pid)}\n`);
    await release();
    expect(await readdir(dir)).toEqual([]);
  });

  it('a live holder is waited for, then refused as LOCKED naming its pid', async () => {
    const dir = await tempDir('tarport-lock-');
    // a live process that is not Node: cheaper to start
    const c = spawn('sleep', ['30']);
    try {
      await writeFile(join(dir, 'lock'), `${c.pid}\n`);
      const t0 = Date.now();
      await expect(takeLock(join(dir, 'lock'), 300)).rejects.toMatchObject({ code: 'LOCKED', message: expect.stringContaining(`pid ${c.pid}`) });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    } finally {
      c.kill();
    }
  });

  it('a stale lock whose breaker died before moving it: waited for within the bound (it spun for ever), then broken once its marker is old', async () => {
    const dir = await tempDir('tarport-lock-');
    const lock = join(dir, 'lock');
    await writeFile(lock, `${deadPid()}\n`);
    const st = await stat(lock, { bigint: true });
    const marker = join(dir, `lock.break-${st.ino}-${st.mtimeNs}`);
    await writeFile(marker, '4242\n'); // a breaker killed between its marker and its rename
    const t0 = Date.now();
    await expect(takeLock(lock, 500)).rejects.toMatchObject({ code: 'LOCKED', message: `the lock ${lock} of a stopped run (pid ${(await readFile(lock, 'utf8')).trim()}) is being broken by another run` });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
    const old = new Date(Date.now() - 120_000);
    await utimes(marker, old, old);
    const release = await takeLock(lock, 0);
    expect(await readFile(lock, 'utf8')).toBe(`${process.pid} ${await procStartOf(process.pid)}\n`);
    await release();
  });

  it('a lock with content tarport never writes (empty, or not a pid) is taken as stale', async () => {
    for (const content of ['', 'garbage\n', '0\n']) {
      const dir = await tempDir('tarport-lock-');
      await writeFile(join(dir, 'lock'), content);
      const release = await takeLock(join(dir, 'lock'), 0);
      expect(await readFile(join(dir, 'lock'), 'utf8')).toBe(`${process.pid} ${await procStartOf(process.pid)}\n`);
      await release();
    }
  });

  it('a live holder named with its start time is waited for, then refused as LOCKED', async () => {
    const dir = await tempDir('tarport-lock-');
    const c = spawn('sleep', ['30']);
    try {
      await vi.waitFor(async () => expect(await procStartOf(c.pid!)).toMatch(/^\d+$/));
      await writeFile(join(dir, 'lock'), `${c.pid} ${await procStartOf(c.pid!)}\n`);
      await expect(takeLock(join(dir, 'lock'), 300)).rejects.toMatchObject({ code: 'LOCKED', message: expect.stringContaining(`pid ${c.pid}`) });
    } finally {
      c.kill();
    }
  });

  it('a lock left by an earlier process whose pid is alive again (reused after a reboot, or pid 1 in a container) is taken as stale', async () => {
    const c = spawn('sleep', ['30']);
    try {
      await vi.waitFor(async () => expect(await procStartOf(c.pid!)).toMatch(/^\d+$/));
      const earlier = String(Number(await procStartOf(c.pid!)) - 1);
      // another process now has the pid; this very process has it (tarport as pid 1, restarted);
      // and a lock of a tarport before 0.4 (no start time) that names this process's pid
      for (const content of [`${c.pid} ${earlier}\n`, `${process.pid} ${String(Number(await procStartOf(process.pid)) - 1)}\n`, `${process.pid}\n`]) {
        const dir = await tempDir('tarport-lock-');
        await writeFile(join(dir, 'lock'), content);
        const release = await takeLock(join(dir, 'lock'), 0);
        expect(await readFile(join(dir, 'lock'), 'utf8'), content).toBe(`${process.pid} ${await procStartOf(process.pid)}\n`);
        await release();
      }
    } finally {
      c.kill();
    }
  });
});
