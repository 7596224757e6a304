import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll } from 'vitest';

// The integration files run in several workers at once. Each worker claims a lane (scripts/lib/
// common.sh, tp_start_lanes): Docker daemons, a containerd and a Podman service no other running
// file uses. A test file sees its lane's under the plain names (TP_SOCK_consumer, ...), so the files
// need not know about lanes. The claim is a folder made atomically in TP_RUN/lanes, holding the
// worker's pid: a claim whose worker died (killed with the run) is taken over.

/** What a lane has of its own; lane K's values are in the same names ending in _K. */
const LANE_VARS = ['TP_SOCK_producer', 'TP_SOCK_consumer', 'TP_CONTAINERD_SOCK', 'TP_PODMAN_SOCK', 'TP_PODMAN_ARGS', 'TP_CONTAINERS_CONF'] as const;
/** A file waits this long for a lane at most: longer than any one file takes, even on a busy machine. */
const WAIT_MS = 90 * 60_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Claims lane `k` in `locks`: true when this worker holds it now. */
function tryClaim(locks: string, k: number): boolean {
  const dir = join(locks, String(k));
  try {
    mkdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    let holder = NaN;
    try {
      holder = Number(readFileSync(join(dir, 'pid'), 'utf8'));
    } catch {
      // being claimed this moment (its pid is not written yet), or by a worker that died before it
      // wrote its pid (then the claim is old)
      if (Date.now() - (statSync(dir, { throwIfNoEntry: false })?.mtimeMs ?? 0) < 10_000) return false;
    }
    if (Number.isInteger(holder) && holder > 0 && alive(holder)) return false;
    rmSync(dir, { recursive: true, force: true });
    return tryClaim(locks, k);
  }
  writeFileSync(join(dir, 'pid'), String(process.pid));
  return true;
}

async function claimLane(locks: string, lanes: number): Promise<number> {
  // a worker starts with the lane of its own number: with as many lanes as workers, none waits
  const first = (Number(process.env.VITEST_POOL_ID ?? '1') - 1) % lanes;
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    for (let i = 0; i < lanes; i++) {
      const k = ((first + i) % lanes) + 1;
      if (tryClaim(locks, k)) return k;
    }
    if (Date.now() > deadline) throw new Error(`no free test lane in ${locks} after ${WAIT_MS / 60_000} minutes (TP_LANES=${lanes}): is another run using them?`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function useLane(k: number): void {
  if (k === 1) return;
  for (const name of LANE_VARS) {
    const value = process.env[`${name}_${k}`];
    if (!value) throw new Error(`${name}_${k} is not set: lane ${k} of TP_LANES=${process.env.TP_LANES} was not started (scripts/lib/common.sh, tp_start_lanes)`);
    process.env[name] = value;
  }
  process.env.CONTAINERS_CONF = process.env.TP_CONTAINERS_CONF;
}

const run = process.env.TP_RUN;
if (run) {
  const lanes = Math.max(1, Number(process.env.TP_LANES ?? '1') || 1);
  const locks = join(run, 'lanes');
  mkdirSync(locks, { recursive: true });
  const lane = await claimLane(locks, lanes);
  useLane(lane);
  process.env.TP_LANE = String(lane);
  afterAll(() => rmSync(join(locks, String(lane)), { recursive: true, force: true }));
}
