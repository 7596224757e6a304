import { spawn } from 'node:child_process';

/** What a hook run came to, for the `hook` event. */
export interface HookOutcome {
  readonly ok: boolean;
  readonly message: string;
  /** The run was cancelled before the hook ran to its end (not started, or stopped): it is still due. */
  readonly cancelled?: boolean;
}

/** How long a hook may run before it is stopped (docs/consumer.md, "Hook"). */
export const HOOK_LIMIT_MS = 300_000;
/**
 * How long a stopped hook has after SIGTERM before its process group is killed: under the 5 s in
 * which bin/tarport.js exits after a signal, so the SIGKILL is sent before tarport is gone.
 */
const HOOK_GRACE_MS = 3_000;
/** How long the hook's output may still come once its shell exited (a command it left running may hold the pipes). */
const DRAIN_MS = 500;

/**
 * Runs the hook with NAME:TAG and the version; its failure is reported, never fatal. The hook runs
 * in a process group of its own, and is stopped as a whole (SIGTERM to the group, SIGKILL 3 s later,
 * and at once should tarport exit first) when the run is cancelled or the hook outlives `limitMs`:
 * a shell that started commands of its own must not leave them running. So the service units can
 * stop tarport alone (systemd's `KillMode=mixed`, contrib/systemd/): a cancelled containerd import
 * then ends through ctr's own error path, which a signal sent to ctr by systemd would cut short
 * (docs/consumer.md). The outcome is the shell's exit: a command it left in the background that
 * still holds its output does not hold the run.
 */
export function runHook(cmd: string, ref: string, version: number, signal?: AbortSignal, limitMs = HOOK_LIMIT_MS, graceMs = HOOK_GRACE_MS, drainMs = DRAIN_MS): Promise<HookOutcome> {
  if (signal?.aborted) return Promise.resolve({ ok: false, message: `hook ${JSON.stringify(cmd)} not run: the run was cancelled`, cancelled: true });
  return new Promise((resolve) => {
    let out = '';
    // CMD gets NAME:TAG and the version as arguments, and as TARPORT_REF and TARPORT_VERSION
    const child = spawn('/bin/sh', ['-c', `${cmd} "$@"`, 'tarport-hook', ref, String(version)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TARPORT_REF: ref, TARPORT_VERSION: String(version) },
      detached: true,
    });
    const group = groupOf(child.pid);
    // tarport exiting (a second signal, the launcher's hard exit) takes the hook's group with it
    const onExit = () => group.signal('SIGKILL');
    process.once('exit', onExit);
    let stopped: string | undefined;
    const stop = (why: string) => {
      if (stopped !== undefined) return;
      stopped = why;
      group.signal('SIGTERM');
      // kept past the outcome: a command of the hook's that ignores SIGTERM is killed all the same
      setTimeout(() => {
        group.signal('SIGKILL');
        process.removeListener('exit', onExit);
      }, graceMs).unref();
    };
    const limit = setTimeout(() => stop(`stopped after ${Math.round(limitMs / 1000)} s`), limitMs);
    const CANCELLED = 'stopped: the run was cancelled';
    const onAbort = () => stop(CANCELLED);
    signal?.addEventListener('abort', onAbort, { once: true });
    let settled = false;
    const done = (o: HookOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(limit);
      signal?.removeEventListener('abort', onAbort);
      // a stopped hook's group stays in reach until its SIGKILL
      if (stopped === undefined) process.removeListener('exit', onExit);
      resolve(o);
    };
    const keep = (d: Buffer) => (out = (out + d.toString()).slice(-2000));
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => done({ ok: false, message: `hook ${JSON.stringify(cmd)} could not run: ${e.message}` }));
    child.on('exit', (code, sig) => {
      // the outcome is the hook's as it exited: a cancel that comes while its output drains stops
      // what it left running, but the hook itself had run to its end
      const stoppedBy = stopped;
      const outcome = () => {
        child.stdout.destroy();
        child.stderr.destroy();
        if (code === 0 && stoppedBy === undefined) return done({ ok: true, message: `hook ${JSON.stringify(cmd)} done` });
        done({ ok: false, message: `hook ${JSON.stringify(cmd)} failed (${stoppedBy ?? sig ?? `exit ${code}`}): ${out.trim().split('\n').slice(-3).join(' | ')}`, ...(stoppedBy === CANCELLED ? { cancelled: true } : {}) });
      };
      // the last of its output, unless a command it left running keeps the pipes open
      const drained = setTimeout(outcome, drainMs);
      child.once('close', () => {
        clearTimeout(drained);
        outcome();
      });
    });
  });
}

/** Signals for a hook's process group; a group already gone is no error. */
function groupOf(pid: number | undefined): { signal(sig: NodeJS.Signals): void } {
  return {
    signal(sig) {
      if (pid === undefined) return;
      try {
        process.kill(-pid, sig);
      } catch {
        /* the group is gone already */
      }
    },
  };
}
