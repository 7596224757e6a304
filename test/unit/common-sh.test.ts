// scripts/lib/common.sh: a script that reports its failures (tp_report_failures) still stops what
// it started when a step fails, and exits with the step's status.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');

/** Runs a script that starts a process (by pidfile, as the scripts start daemons), then `step`. */
function runScript(step: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = [
    `source '${join(ROOT, 'scripts/lib/common.sh')}'`,
    'tp_rundir',
    'tp_report_failures demo',
    'sleep 300 >/dev/null 2>&1 &',
    'echo $! > "$TP_RUN/sleep.pid"; TP_PIDFILES+=("$TP_RUN/sleep.pid")',
    'echo "$TP_RUN $!"',
    step,
    'echo after',
  ].join('\n');
  return new Promise((done) => {
    execFile('bash', ['-c', script], { timeout: 30_000 }, (err, stdout, stderr) => {
      done({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('tp_report_failures', () => {
  it('a failed step: the command is named, the started process stopped, the run dir removed, its status the exit', async () => {
    const r = await runScript("sh -c 'exit 3'");
    const [dir, pid] = r.stdout.split('\n')[0]!.split(' ');
    expect(Number(pid)).toBeGreaterThan(1);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stdout).not.toContain('after');
    expect(r.stderr).toContain("demo stopped (exit 3); the last command that failed: sh -c 'exit 3' (line 7 of bash)");
    expect(alive(Number(pid))).toBe(false);
    expect(existsSync(dir!)).toBe(false);
  });

  it('a run that ends well: no report, and the same cleanup', async () => {
    const r = await runScript('true');
    const [dir, pid] = r.stdout.split('\n')[0]!.split(' ');
    expect(Number(pid)).toBeGreaterThan(1);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('after');
    expect(r.stderr).not.toContain('stopped');
    expect(alive(Number(pid))).toBe(false);
    expect(existsSync(dir!)).toBe(false);
  });
});
