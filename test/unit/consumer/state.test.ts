import { spawn } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StateStore, type State } from '../../../src/consumer/state.js';
import { TarportError } from '../../../src/errors.js';
import { procStartOf, tempDir } from '../../helpers.js';

async function errorOf(p: Promise<unknown>): Promise<TarportError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof TarportError)) throw new Error(`expected a TarportError, got ${String(e)}`);
  return e;
}

/** A pid that belonged to a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  const pid = child.pid!;
  await new Promise((r) => child.once('exit', r));
  return pid;
}

const sample: State = {
  schema: 'tarport.consumer-state/v1',
  catalogSequence: { '/srv/repo': 7 },
  loaded: { '/srv/repo': { 'app:1': { version: 3, record: 'releases/app/1/3.json', digest: 'sha256:ab', imageId: 'sha256:cd', loadedAt: '2026-01-01T00:00:00.000Z', previous: ['sha256:ef'] } } },
  catalogStat: { '/srv/repo': { size: 10, mtime: 20 } },
  loads: 1,
};

describe('StateStore: the state file', () => {
  it('reads an empty state where there is none yet', async () => {
    const store = new StateStore(join(await tempDir(), 'not-yet'));
    expect(await store.read()).toEqual({ schema: 'tarport.consumer-state/v1', catalogSequence: {}, loaded: {}, catalogStat: {}, loads: 0 });
    expect(store.cacheDir).toBe(join(store.dir, 'cache'));
  });

  it('writes atomically and reads back what it wrote, leaving no temp file', async () => {
    const store = new StateStore(join(await tempDir(), 'st'));
    await store.write(sample);
    expect(await store.read()).toEqual(sample);
    expect(await readdir(store.dir)).toEqual(['state.json']);
    await store.write({ ...sample, catalogSequence: { '/srv/repo': 8 } });
    expect((await store.read()).catalogSequence).toEqual({ '/srv/repo': 8 });
  });

  it('a state file that is not JSON, or not a state, is a config error naming the file', async () => {
    const store = new StateStore(await tempDir());
    const file = join(store.dir, 'state.json');
    await writeFile(file, '{"schema": "tarport.consumer-state/v1", ');
    const notJson = await errorOf(store.read());
    expect(notJson.code).toBe('CONFIG');
    expect(notJson.message).toContain(`consumer state ${file} is not valid JSON`);
    expect(notJson.message).toContain('move it away to start afresh');
    await writeFile(file, JSON.stringify({ schema: 'something-else', catalogSequence: {}, loaded: {} }));
    const notState = await errorOf(store.read());
    expect(notState.code).toBe('CONFIG');
    expect(notState.message).toBe(`consumer state ${file} is not a tarport state file; move it away to start afresh`);
    // a negative sequence is no state either: rollback protection must not start below zero
    await writeFile(file, JSON.stringify({ ...sample, catalogSequence: { x: -1 } }));
    expect((await errorOf(store.read())).code).toBe('CONFIG');
  });
});

describe('StateStore: the lock', () => {
  it('is held until released; a second run waits its bounded time, then is refused naming the holder', async () => {
    const store = new StateStore(join(await tempDir(), 'st'));
    const release = await store.lock(0);
    expect((await readFile(join(store.dir, 'lock'), 'utf8')).trim()).toBe(`${process.pid} ${await procStartOf(process.pid)}`);
    const t0 = Date.now();
    const e = await errorOf(store.lock(600));
    const waited = Date.now() - t0;
    expect(e.code).toBe('LOCKED');
    expect(e.message).toBe(`another tarport run (pid ${process.pid}) holds the lock ${join(store.dir, 'lock')}; it will pick up anything new`);
    expect(waited).toBeGreaterThanOrEqual(550);
    expect(waited).toBeLessThan(10_000);
    await release();
    await (await store.lock(0))();
    expect(await readdir(store.dir)).toEqual([]);
  });

  it('a waiting run gets the lock once the holder releases it', async () => {
    const store = new StateStore(await tempDir());
    const release = await store.lock(0);
    const waiting = store.lock(20_000);
    setTimeout(() => void release(), 300);
    const second = await waiting;
    expect((await readFile(join(store.dir, 'lock'), 'utf8')).trim()).toBe(`${process.pid} ${await procStartOf(process.pid)}`);
    await second();
  });

  it('a lock held by another live process is honoured', async () => {
    const store = new StateStore(await tempDir());
    await writeFile(join(store.dir, 'lock'), `${process.ppid}\n`);
    const e = await errorOf(store.lock(0));
    expect(e.code).toBe('LOCKED');
    expect(e.message).toContain(`pid ${process.ppid}`);
    expect((await readFile(join(store.dir, 'lock'), 'utf8')).trim()).toBe(String(process.ppid));
  });

  it('a lock left by a dead process, or holding no pid, is taken over', async () => {
    for (const left of [`${await deadPid()}\n`, '', 'garbage\n', '-5\n']) {
      const store = new StateStore(await tempDir());
      await writeFile(join(store.dir, 'lock'), left);
      const release = await store.lock(0);
      expect((await readFile(join(store.dir, 'lock'), 'utf8')).trim(), JSON.stringify(left)).toBe(`${process.pid} ${await procStartOf(process.pid)}`);
      await release();
    }
  });

  it('two runs that find the same stale lock: exactly one takes it over', async () => {
    const dead = await deadPid();
    for (let round = 0; round < 40; round++) {
      const store = new StateStore(await tempDir());
      await writeFile(join(store.dir, 'lock'), `${dead}\n`);
      const [a, b] = await Promise.allSettled([store.lock(0), store.lock(0)]);
      const won = [a, b].filter((r) => r.status === 'fulfilled');
      expect(won.length, `round ${round}`).toBe(1);
      const lost = [a, b].find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect((lost.reason as TarportError).code).toBe('LOCKED');
    }
  });
});
