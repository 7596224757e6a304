import { execFile, execFileSync, spawn } from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, openSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import * as tar from 'tar-stream';

const run = promisify(execFile);
export const ROOT = new URL('..', import.meta.url).pathname;

/**
 * The real parts the integration tests need, started by scripts/test. A test that cannot reach them
 * fails; it never skips.
 */
export function realEnv(): { producer: string; consumer: string; fixtures: string; docker: string } {
  const producer = process.env.TP_SOCK_producer;
  const consumer = process.env.TP_SOCK_consumer;
  const fixtures = process.env.TP_FIXTURES;
  if (!producer || !consumer || !fixtures) {
    throw new Error('run the suite through scripts/test: it starts the two Docker daemons and builds the fixtures (TP_SOCK_producer, TP_SOCK_consumer, TP_FIXTURES)');
  }
  return { producer, consumer, fixtures, docker: process.env.TP_DOCKER ?? 'docker' };
}

export const fixture = (name: string) => join(realEnv().fixtures, name);

export async function docker(which: 'producer' | 'consumer', ...args: string[]): Promise<string> {
  const e = realEnv();
  const { stdout } = await run(e.docker, args, { env: { ...process.env, DOCKER_HOST: e[which] }, maxBuffer: 64 << 20 });
  return stdout.trim();
}

/** Removes every image from a daemon, so a test starts from an empty store. */
export async function emptyDaemon(which: 'producer' | 'consumer'): Promise<void> {
  const ids = (await docker(which, 'images', '-aq')).split('\n').filter(Boolean);
  if (ids.length > 0) await docker(which, 'rmi', '-f', ...new Set(ids));
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * What the CLI gets on its standard input: nothing (the default), a file sent through a real pipe
 * (`pipe: null`: a pipe closed at once), or the file itself (`tarport push - < file`).
 */
export type CliStdin = { pipe: string | null } | { redirect: string };

/** Runs the real CLI (bin/tarport.js) as a user would. */
export function tarport(args: string[], env: Record<string, string | undefined> = {}, input?: CliStdin): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const fd = input && 'redirect' in input ? openSync(input.redirect, 'r') : undefined;
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), ...args], {
      env: { ...process.env, ...env },
      stdio: [fd ?? (input ? 'pipe' : 'ignore'), 'pipe', 'pipe'],
    });
    if (fd !== undefined) closeSync(fd);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c) => (stdout += c));
    child.stderr!.on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    if (!child.stdin || !input || !('pipe' in input)) return;
    child.stdin.on('error', () => undefined); // a CLI that refused early closes its end
    if (input.pipe) createReadStream(input.pipe).pipe(child.stdin);
    else child.stdin.end();
  });
}

/**
 * Runs test/zstd-memory.mjs: decodes `outMiB` of zeros out of a few KiB of zstd with `decoder` in a
 * process of its own, and gives its bytes out, bytes in and peak resident growth.
 */
export function zstdMemory(decoder: string, outMiB: number): Promise<{ n: number; peak: number; in: number; decoder: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'test/zstd-memory.mjs'), decoder, String(outMiB)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`test/zstd-memory.mjs ${decoder} exited ${code}: ${err}`))));
  });
}

type CliMain = typeof import('../src/cli/main.js');
let cliMain: Promise<CliMain> | undefined;
let cliQueue: Promise<unknown> = Promise.resolve();

/**
 * Runs the CLI inside this test process: the same built code as bin/tarport.js (dist/cli/main.js,
 * with its worker threads), with `env` laid over the environment and stdout and stderr captured,
 * as a spawn would see them (not a terminal). A spawn costs half a second of CPU in module loading
 * alone; a file that runs the CLI dozens of times keeps one or two real spawns (tarport()) as smoke
 * tests of the launcher and runs the rest here. Not for what needs a process of its own: signals,
 * the launcher's exit guard, stderr as a file (JOURNAL_STREAM). Runs go one at a time, since they
 * share process.env and the two streams.
 */
export function tarportInProcess(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  const run = cliQueue.then(() => runInProcess(args, env));
  cliQueue = run.catch(() => undefined);
  return run;
}

async function runInProcess(args: string[], env: Record<string, string | undefined>): Promise<CliResult> {
  cliMain ??= import(join(ROOT, 'dist/cli/main.js')).catch((e: unknown) => {
    throw new Error(`dist/cli/main.js is not there: run npm run build first (${String(e)})`);
  }) as Promise<CliMain>;
  const { main } = await cliMain;
  const savedEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  const out = { stdout: '', stderr: '' };
  const restore = [captureStream(process.stdout, (s) => (out.stdout += s)), captureStream(process.stderr, (s) => (out.stderr += s))];
  try {
    const code = await main([process.execPath, join(ROOT, 'bin/tarport.js'), ...args]);
    return { code, ...out };
  } finally {
    restore.forEach((r) => r());
    for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
    Object.assign(process.env, savedEnv);
  }
}

/** Swaps a stream's write for a collector, and says it is no terminal; returns the undo. */
function captureStream(stream: NodeJS.WriteStream, collect: (s: string) => void): () => void {
  const write = Object.getOwnPropertyDescriptor(stream, 'write');
  const tty = Object.getOwnPropertyDescriptor(stream, 'isTTY');
  Object.defineProperty(stream, 'isTTY', { value: false, configurable: true, writable: true });
  stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    collect(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    if (cb) process.nextTick(cb);
    return true;
  }) as typeof stream.write;
  return () => {
    if (write) Object.defineProperty(stream, 'write', write);
    else delete (stream as { write?: unknown }).write;
    if (tty) Object.defineProperty(stream, 'isTTY', tty);
    else delete (stream as { isTTY?: boolean }).isTTY;
  };
}

/**
 * The base layer size for writeDemoArchives in tests (its default, 4 MiB, is the demo a user sees):
 * no test of the CLI or the consumer needs more to be exact, and every push of 4 MiB cost a
 * fraction of a second of CPU in hashing and compression, many times over in the unit project.
 */
export const SMALL = 64 << 10;

const madeDirs: string[] = [];

/** A fresh folder under the system temp dir, removed after the test file by test/setup.ts. */
/**
 * Writes an executable script (mode 755) by way of a child process. A script that this test process
 * had open for writing could not be run while a child that another thread had just forked still
 * held the descriptor, between its fork and its exec: `spawn ETXTBSY`, seen in CI in the unit
 * project, whose files share one process.
 */
export function writeScript(path: string, text: string): void {
  execFileSync('/bin/sh', ['-c', 'cat > "$1" && chmod 755 "$1"', 'sh', path], { input: text });
}

export async function tempDir(prefix = 'tarport-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  madeDirs.push(dir);
  return dir;
}

/**
 * Removes every folder tempDir made in this test file (TARPORT_KEEP_TEST_TMP=1 keeps them to look
 * at). A suite run made thousands of them and filled the disk of a long-lived machine.
 */
export async function removeTempDirs(): Promise<void> {
  if (process.env.TARPORT_KEEP_TEST_TMP === '1') return;
  const dirs = madeDirs.splice(0);
  const results = await Promise.allSettled(dirs.map((d) => rm(d, { recursive: true, force: true, maxRetries: 3 })));
  results.forEach((r, i) => {
    // a folder still in use (a stick left mounted by a failed test) stays, said once, not a failure
    if (r.status === 'rejected') console.warn(`test temp folder ${dirs[i]} left behind: ${String(r.reason)}`);
  });
}

/** Every file below a folder, as relative paths. */
export async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(dir, p));
    }
  };
  await walk(dir);
  return out.sort();
}

export async function sizeOf(path: string): Promise<number> {
  return (await stat(path)).size;
}

export interface TarItem {
  header: tar.Header;
  data: Buffer;
}

/** Reads a (small) tar fully: fixtures only. */
export async function readTar(path: string): Promise<TarItem[]> {
  const items: TarItem[] = [];
  const ex = tar.extract();
  const reading = (async () => {
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      items.push({ header: e.header, data: Buffer.concat(chunks) });
    }
  })();
  await pipeline(createReadStream(path), ex);
  await reading;
  return items;
}

export async function writeTar(path: string, items: TarItem[]): Promise<void> {
  const pack = tar.pack();
  const writing = pipeline(pack, createWriteStream(path));
  for (const it of items) {
    await new Promise<void>((res, rej) => {
      const done = (e?: Error | null) => (e ? rej(e) : res());
      if (it.header.type === 'file') pack.entry({ ...it.header, size: it.data.length }, it.data, done);
      else pack.entry({ ...it.header, size: 0 }, done);
    });
  }
  pack.finalize();
  await writing;
}

/** A process's start time as /proc/PID/stat gives it (field 22), read on its own: the consumer lock names its holder by it. */
export async function procStartOf(pid: number): Promise<string | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return text?.slice(text.lastIndexOf(')') + 2).split(' ')[19];
}
