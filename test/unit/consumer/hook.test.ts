// src/consumer/hook.ts: the command run after each load, and how it is stopped.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { runHook } from '../../../src/consumer/hook.js';
import { tempDir } from '../../helpers.js';

/** Whether a process is alive (signal 0 only checks). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A hook whose shell starts a command of its own (a sleep that writes its pid), then waits for it. */
async function forkingHook(): Promise<{ cmd: string; pidOf: () => Promise<number> }> {
  const dir = await tempDir();
  const script = join(dir, 'hook.sh');
  const pidFile = join(dir, 'child.pid');
  await writeFile(script, `#!/bin/sh\nsleep 60 &\necho $! > ${pidFile}\nwait\n`, { mode: 0o755 });
  return {
    cmd: script,
    pidOf: async () => {
      await vi.waitFor(async () => expect((await readFile(pidFile, 'utf8').catch(() => '')).trim()).toMatch(/^\d+$/), { timeout: 5000 });
      return Number((await readFile(pidFile, 'utf8')).trim());
    },
  };
}

describe('runHook', () => {
  it('gets NAME:TAG and the version as arguments and in the environment; exit 0 is done', async () => {
    const dir = await tempDir();
    const out = join(dir, 'out');
    const script = join(dir, 'hook.sh');
    await writeFile(script, `#!/bin/sh\necho "$1|$2|$TARPORT_REF|$TARPORT_VERSION" > ${out}\n`, { mode: 0o755 });
    const r = await runHook(script, 'team/app:1', 7);
    expect(r).toEqual({ ok: true, message: `hook ${JSON.stringify(script)} done` });
    expect(await readFile(out, 'utf8')).toBe('team/app:1|7|team/app:1|7\n');
  });

  it('a failing hook is reported with its exit code and the tail of its output', async () => {
    const r = await runHook('echo one; echo two >&2; exit 4', 'team/app:1', 2);
    expect(r.ok).toBe(false);
    expect(r.message).toBe('hook "echo one; echo two >&2; exit 4" failed (exit 4): one | two');
  });

  it('a cancelled run stops the hook and every command it started (its process group), and says so', async () => {
    const hook = await forkingHook();
    const ctl = new AbortController();
    const running = runHook(hook.cmd, 'team/app:1', 1, ctl.signal);
    const child = await hook.pidOf();
    expect(alive(child)).toBe(true);
    ctl.abort();
    const r = await running;
    expect(r.ok).toBe(false);
    expect(r.message).toBe(`hook ${JSON.stringify(hook.cmd)} failed (stopped: the run was cancelled): `);
    await vi.waitFor(() => expect(alive(child)).toBe(false), { timeout: 5000 });
  });

  it('a hook past its time limit is stopped with what it started', async () => {
    const hook = await forkingHook();
    const running = runHook(hook.cmd, 'team/app:1', 1, undefined, 1500);
    const child = await hook.pidOf();
    const r = await running;
    expect(r.message).toBe(`hook ${JSON.stringify(hook.cmd)} failed (stopped after 2 s): `);
    await vi.waitFor(() => expect(alive(child)).toBe(false), { timeout: 5000 });
  });
});
