import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { TarportError } from '../../errors.js';

export interface CtrOptions {
  /** containerd's gRPC socket (ctr -a). */
  readonly socket: string;
  /** The namespace images go into (ctr -n); kubelet, k3s and RKE2 read k8s.io. */
  readonly namespace: string;
  /** The ctr binary; `ctr` on PATH by default. */
  readonly ctr?: string;
  /** The snapshotter to unpack into; empty: containerd's default (or CONTAINERD_SNAPSHOTTER). */
  readonly snapshotter?: string;
}

/** How long a ctr call that only reads metadata may take, and an import after its input ended. */
export const CTR_QUERY_TIMEOUT_MS = 60_000;
export const CTR_IMPORT_TAIL_TIMEOUT_MS = 600_000;
/**
 * How long an import's ctr may leave its input waiting (its stdin full, nothing taken) before the
 * import is cut: containerd that stopped taking the import would otherwise hold it, and the
 * downloads that feed it, for ever (Docker's loads have the same bound, DAEMON_IDLE_MS).
 */
export const CTR_INTAKE_IDLE_MS = 600_000;
/** How long ctr has to end on its own once its input was cut (cutImport), before it is killed. */
const CUT_GRACE_MS = 10_000;

/**
 * Runs `ctr -a SOCKET -n NAMESPACE ARGS…` and returns its stdout. A non-zero exit fails with ctr's
 * own last lines of stderr. With `input`, the stream is ctr's stdin; the bound on the call then
 * starts when the input has ended (an import takes as long as its input takes to arrive).
 */
export function ctr(o: CtrOptions, args: readonly string[], opts: { input?: Readable; signal?: AbortSignal; timeoutMs?: number; intakeIdleMs?: number } = {}): Promise<string> {
  const bin = o.ctr ?? 'ctr';
  const full = ['-a', o.socket, '-n', o.namespace, ...args];
  const what = `ctr ${args.slice(0, 2).join(' ')} (containerd at ${o.socket}, namespace ${o.namespace})`;
  // ctr waits up to its dial timeout for a socket that is not there: say so at once
  if (!existsSync(o.socket)) return Promise.reject(new TarportError('DAEMON', `${what}: no socket at ${o.socket}: is containerd running, and is --containerd-socket right?`));
  return new Promise((resolve, reject) => {
    // an import is stopped through its input (cutImport), a query by the signal itself; an import
    // runs in a process group of its own, so that Ctrl-C in a terminal reaches tarport, which cuts
    // it, and not ctr, which would die with its lease left behind
    const child = spawn(bin, full, { stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'], ...(opts.signal && !opts.input ? { signal: opts.signal } : {}), ...(opts.input ? { detached: true } : {}) });
    let out = '';
    let err = '';
    let inputError: Error | undefined;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number) => {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new TarportError('DAEMON', `${what} did not finish within ${Math.round(ms / 1000)} s`, { retryable: true }));
      }, ms);
    };
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ENOENT') reject(new TarportError('CONFIG', `${bin} not found: the containerd runtime drives containerd's own ctr; install containerd (it ships ctr) or pass --ctr PATH`));
      else if (e.name === 'AbortError') reject(new TarportError('ABORTED', `${what}: cancelled`));
      else reject(new TarportError('DAEMON', `${what}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (inputError) return reject(inputError);
      if (code === 0) return resolve(out);
      const last = err.trim().split('\n').slice(-3).join(' | ');
      // a missing socket is the usual cause of a failure on the first call: say so
      const hint = existsSync(o.socket) ? '' : `; no socket at ${o.socket}: is containerd running, and is --containerd-socket right?`;
      reject(new TarportError('DAEMON', `${what} failed (${sig ?? `exit ${code}`}): ${last}${hint}`));
    });
    if (opts.input) {
      const input = opts.input;
      let ended = false;
      const cut = (e: Error) => {
        if (inputError) return;
        inputError = e;
        // once the whole archive went in, only a kill stops ctr (and its lease stays)
        if (ended) child.kill('SIGKILL');
        else cutImport(child, input);
      };
      input.on('error', cut);
      const onAbort = () => cut(new TarportError('ABORTED', `${what}: cancelled`));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      child.once('close', () => opts.signal?.removeEventListener('abort', onAbort));
      const idleMs = opts.intakeIdleMs ?? CTR_INTAKE_IDLE_MS;
      const unwatch = watchIntake(child.stdin!, idleMs, () => cut(new TarportError('DAEMON', `${what} took none of its input for ${idleMs / 1000} s: is containerd stuck?`, { retryable: true })));
      child.once('close', unwatch);
      input.on('end', () => {
        ended = true;
        unwatch();
        arm(opts.timeoutMs ?? CTR_IMPORT_TAIL_TIMEOUT_MS);
      });
      child.stdin!.on('error', () => undefined); // ctr exiting early shows as its exit status
      // an input that failed before ctr started keeps its fault on the stream: no 'error' comes to
      // hear, and piping it would leave ctr waiting on its stdin for ever
      if (input.errored || input.destroyed) cut(input.errored ?? new TarportError('INTERNAL', `${what}: its input was closed before it started`));
      else input.pipe(child.stdin!);
      if (opts.signal?.aborted) onAbort();
    } else arm(opts.timeoutMs ?? CTR_QUERY_TIMEOUT_MS);
  });
}

/**
 * Calls `onStall` once `stdin` stayed full (nothing taken since its last drain) for `idleMs`; returns
 * the stop. A slow but moving import drains now and then, and is never cut.
 */
function watchIntake(stdin: Writable, idleMs: number, onStall: () => void): () => void {
  let fullSince: number | undefined;
  const drained = () => (fullSince = undefined);
  stdin.on('drain', drained);
  const t = setInterval(() => {
    if (!stdin.writableNeedDrain) return void (fullSince = undefined);
    fullSince ??= Date.now();
    if (Date.now() - fullSince < idleMs) return;
    stop();
    onStall();
  }, Math.max(50, Math.min(1000, idleMs / 4)));
  t.unref();
  const stop = () => {
    clearInterval(t);
    stdin.off('drain', drained);
  };
  return stop;
}

/**
 * Ends an import whose input failed or was cancelled through ctr's own error path: a block that is
 * no tar header (or, inside an entry, bytes after which the entry ends too soon), then the end of
 * its stdin. ctr then fails the import and deletes the lease it took for it, so containerd
 * collects what the import had written; a ctr killed instead leaves that lease behind, and the
 * blobs with it, for the lease's 24 hours. Killed all the same if it does not end in time. The
 * archive's index comes last, so an import cut before its input ended creates no image either way.
 */
function cutImport(child: ChildProcess, input: Readable): void {
  input.unpipe(child.stdin!);
  child.stdin!.end(Buffer.alloc(1024, 0xff));
  setTimeout(() => child.kill('SIGKILL'), CUT_GRACE_MS).unref();
}
