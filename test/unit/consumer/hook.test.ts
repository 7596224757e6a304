// src/consumer/hook.ts: the command run after each load, and how it is stopped.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { runHook } from '../../../src/consumer/hook.js';
import { tempDir, writeScript } from '../../helpers.js';

/** Whether a process is alive: a zombie (killed, not yet reaped by a PID 1 that does not reap) is not. */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/**
 * A hook whose shell starts a command of its own (a sleep that writes its pid; `trap` lines the
 * command runs first, e.g. to ignore SIGTERM), then waits for it, or (`leave`) exits 0 at once
 * with the command still holding its output.
 */
async function forkingHook(opts: { ignoreTerm?: boolean; leave?: boolean } = {}): Promise<{ cmd: string; pidOf: () => Promise<number>; shellGone: () => Promise<void> }> {
  const dir = await tempDir();
  const script = join(dir, 'hook.sh');
  const pidFile = join(dir, 'child.pid');
  const shellFile = join(dir, 'shell.pid');
  // a child that ignores TERM names itself once its trap is set: a TERM before that would end it
  const child = opts.ignoreTerm ? `sh -c 'trap "" TERM; echo $$ > ${pidFile}; sleep 600 & wait; sleep 600' &` : `sleep 600 &\necho $! > ${pidFile}`;
  writeScript(script, `#!/bin/sh\necho $$ > ${shellFile}\n${child}\n${opts.leave ? 'exit 0' : 'wait'}\n`);
  const pidIn = async (file: string) => {
    await vi.waitFor(async () => expect((await readFile(file, 'utf8').catch(() => '')).trim()).toMatch(/^\d+$/), { timeout: 5000 });
    return Number((await readFile(file, 'utf8')).trim());
  };
  return {
    cmd: script,
    pidOf: () => pidIn(pidFile),
    /** Resolves once the hook's own shell has exited (gone, or a zombie not yet reaped). */
    shellGone: async () => {
      const shell = await pidIn(shellFile);
      await vi.waitFor(async () => expect(await alive(shell)).toBe(false), { timeout: 5000, interval: 20 });
    },
  };
}

describe('runHook', () => {
  it('gets NAME:TAG and the version as arguments and in the environment; exit 0 is done', async () => {
    const dir = await tempDir();
    const out = join(dir, 'out');
    const script = join(dir, 'hook.sh');
    writeScript(script, `#!/bin/sh\necho "$1|$2|$TARPORT_REF|$TARPORT_VERSION" > ${out}\n`);
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
    expect(await alive(child)).toBe(true);
    ctl.abort();
    const r = await running;
    expect(r).toEqual({ ok: false, message: `hook ${JSON.stringify(hook.cmd)} failed (stopped: the run was cancelled): `, cancelled: true });
    await vi.waitFor(async () => expect(await alive(child)).toBe(false), { timeout: 5000 });
  }, 15_000);

  it('a hook past its time limit is stopped with what it started', async () => {
    const hook = await forkingHook();
    const running = runHook(hook.cmd, 'team/app:1', 1, undefined, 1500);
    const child = await hook.pidOf();
    const r = await running;
    expect(r.message).toBe(`hook ${JSON.stringify(hook.cmd)} failed (stopped after 2 s): `);
    await vi.waitFor(async () => expect(await alive(child)).toBe(false), { timeout: 5000 });
  }, 15_000);

  it('a command of the hook that ignores SIGTERM is killed after the grace, though the hook was reported', async () => {
    const hook = await forkingHook({ ignoreTerm: true });
    const ctl = new AbortController();
    // a grace of 5 s: the outcome comes after the output's drain, and the child must still be
    // there to be seen ignoring TERM on a busy machine
    const running = runHook(hook.cmd, 'team/app:1', 1, ctl.signal, undefined, 5_000);
    const child = await hook.pidOf();
    ctl.abort();
    expect((await running).message).toBe(`hook ${JSON.stringify(hook.cmd)} failed (stopped: the run was cancelled): `);
    expect(await alive(child)).toBe(true); // TERM ignored
    await vi.waitFor(async () => expect(await alive(child)).toBe(false), { timeout: 15_000, interval: 50 });
  }, 30_000);

  it('a hook that exits 0 leaving a command that holds its output is done, not held until the limit', async () => {
    const hook = await forkingHook({ leave: true });
    const t0 = Date.now();
    const r = await runHook(hook.cmd, 'team/app:1', 1, undefined, 60_000);
    expect(r).toEqual({ ok: true, message: `hook ${JSON.stringify(hook.cmd)} done` });
    expect(Date.now() - t0).toBeLessThan(30_000);
    process.kill(await hook.pidOf(), 'SIGKILL');
  }, 45_000);

  it('a run cancelled after the hook exited 0 (while its output drains) has it done, and stops what it left running', async () => {
    const hook = await forkingHook({ leave: true });
    const ctl = new AbortController();
    // a drain of 10 s, not 0.5: the cancel must come while the output drains, and noticing the
    // child's pid file can take longer than half a second on a busy machine
    const running = runHook(hook.cmd, 'team/app:1', 1, ctl.signal, 60_000, undefined, 10_000);
    const child = await hook.pidOf();
    // the cancel comes once the shell has exited and its exit was seen, while its output drains
    // (for up to 10 s: the command it left holds the pipes)
    await hook.shellGone();
    await new Promise((r) => setTimeout(r, 500));
    ctl.abort();
    expect(await running).toEqual({ ok: true, message: `hook ${JSON.stringify(hook.cmd)} done` });
    await vi.waitFor(async () => expect(await alive(child)).toBe(false), { timeout: 5000 });
  }, 15_000);

  it('a run already cancelled does not start the hook', async () => {
    const dir = await tempDir();
    const ctl = new AbortController();
    ctl.abort();
    const r = await runHook(`touch ${join(dir, 'ran')}`, 'team/app:1', 1, ctl.signal);
    expect(r).toEqual({ ok: false, message: `hook ${JSON.stringify(`touch ${join(dir, 'ran')}`)} not run: the run was cancelled`, cancelled: true });
    expect(await readFile(join(dir, 'ran')).catch(() => 'absent')).toBe('absent');
  });
});
