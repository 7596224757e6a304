import { spawn } from 'node:child_process';

/** What a hook run came to, for the `hook` event. */
export interface HookOutcome {
  readonly ok: boolean;
  readonly message: string;
}

/** How long a hook may run before it is stopped (docs/consumer.md, "Hook"). */
export const HOOK_LIMIT_MS = 300_000;
/** How long a stopped hook has after SIGTERM before its process group is killed. */
const HOOK_GRACE_MS = 10_000;

/**
 * Runs the hook with NAME:TAG and the version; its failure is reported, never fatal. The hook runs
 * in a process group of its own, and is stopped as a whole (SIGTERM to the group, SIGKILL 10 s
 * later) when the run is cancelled or the hook outlives `limitMs`: a shell that started commands of
 * its own must not leave them running. So the service units can stop tarport alone (systemd's
 * `KillMode=mixed`, contrib/systemd/): a cancelled containerd import then ends through ctr's own
 * error path, which a signal sent to ctr by systemd would cut short (docs/consumer.md).
 */
export function runHook(cmd: string, ref: string, version: number, signal?: AbortSignal, limitMs = HOOK_LIMIT_MS): Promise<HookOutcome> {
  return new Promise((resolve) => {
    let out = '';
    let stopped: string | undefined;
    // CMD gets NAME:TAG and the version as arguments, and as TARPORT_REF and TARPORT_VERSION
    const child = spawn('/bin/sh', ['-c', `${cmd} "$@"`, 'tarport-hook', ref, String(version)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TARPORT_REF: ref, TARPORT_VERSION: String(version) },
      detached: true,
    });
    const group = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        /* the group is gone already */
      }
    };
    let kill: NodeJS.Timeout | undefined;
    const stop = (why: string) => {
      if (stopped !== undefined || child.pid === undefined) return;
      stopped = why;
      group('SIGTERM');
      kill = setTimeout(() => group('SIGKILL'), HOOK_GRACE_MS);
    };
    const limit = setTimeout(() => stop(`stopped after ${Math.round(limitMs / 1000)} s`), limitMs);
    const onAbort = () => stop('stopped: the run was cancelled');
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    const done = (o: HookOutcome) => {
      clearTimeout(limit);
      clearTimeout(kill);
      signal?.removeEventListener('abort', onAbort);
      resolve(o);
    };
    const keep = (d: Buffer) => (out = (out + d.toString()).slice(-2000));
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => done({ ok: false, message: `hook ${JSON.stringify(cmd)} could not run: ${e.message}` }));
    child.on('close', (code, sig) => {
      if (code === 0 && stopped === undefined) return done({ ok: true, message: `hook ${JSON.stringify(cmd)} done` });
      const how = stopped ?? (sig ?? `exit ${code}`);
      done({ ok: false, message: `hook ${JSON.stringify(cmd)} failed (${how}): ${out.trim().split('\n').slice(-3).join(' | ')}` });
    });
  });
}
