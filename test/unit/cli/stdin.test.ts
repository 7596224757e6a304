// src/cli/stdin.ts: `tarport push -` copies standard input to a file of its own first; and the
// command end to end, with a real pipe (or a redirected file) into the real CLI (helpers.ts).
import { createWriteStream, existsSync, mkdirSync, statSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../../src/archive/index.js';
import { STDIN_NAME, startPipeSpool, startSpool } from '../../../src/cli/stdin.js';
import { TarportError } from '../../../src/errors.js';
import { ROOT, SMALL, filesBelow, tarport, tempDir, writeScript, writeTar, type TarItem } from '../../helpers.js';

let tmp: string;
let savedTmp: string | undefined;
beforeEach(async () => {
  savedTmp = process.env.TMPDIR;
  tmp = await tempDir('tarport-stdin-test-');
  process.env.TMPDIR = tmp; // os.tmpdir() reads it on every call
});
afterEach(() => {
  if (savedTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmp;
});
const never = new AbortController().signal;

/** The whole copy, as push waits for it before it reads the archive's end. */
async function spoolStdin(input: Parameters<typeof startSpool>[0], signal: AbortSignal, idleMs?: number) {
  const s = await startSpool(input, signal, idleMs === undefined ? {} : { idleMs });
  await s.complete;
  return s;
}

describe('startSpool (standard input that is no pipe, or a pipe tarport copies itself)', () => {
  it('copies every byte into a file under TMPDIR, which remove() takes away', async () => {
    const bytes = Buffer.from(Array.from({ length: 3 << 20 }, (_, i) => i % 253));
    const s = await spoolStdin(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]), never);
    expect(s.path.startsWith(tmp)).toBe(true);
    expect((await readFile(s.path)).equals(bytes)).toBe(true);
    await s.remove();
    expect(await readdir(tmp)).toEqual([]);
  });

  it('shows every chunk to the tap once, in order, and only once it is in the file', async () => {
    const bytes = Buffer.from(Array.from({ length: 6 << 20 }, (_, i) => (i * 7) % 251));
    const pieces = Array.from({ length: 96 }, (_, i) => bytes.subarray(i << 16, (i + 1) << 16));
    const tapped: Buffer[] = [];
    let behind = 0;
    let path = '';
    const s = await startSpool(Readable.from(pieces), never, {
      tap: (c) => {
        tapped.push(Buffer.from(c));
        const seen = tapped.reduce((n, t) => n + t.length, 0);
        // the file may already hold the next batch, never less than what the tap saw
        if (statSync(path).size < seen) behind++;
      },
    });
    path = s.path;
    await s.complete;
    expect(behind).toBe(0);
    expect(Buffer.concat(tapped).equals(bytes)).toBe(true);
    await s.remove();
  });

  it('a tap that throws fails the copy with its fault, sees nothing more, and leaves nothing behind', async () => {
    let calls = 0;
    const pieces = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 << 10, i));
    const s = await startSpool(Readable.from(pieces), never, {
      tap: () => {
        if (++calls === 1) throw new Error('tap broke');
      },
    });
    const e = await s.complete.catch((x: unknown) => x);
    expect(e).toMatchObject({ message: expect.stringContaining('tap broke') as unknown });
    expect(s.fault()).toBe(e);
    expect(calls).toBe(1);
    expect(await readdir(tmp)).toEqual([]);
  });

  it('a TMPDIR that fills is named by its folder (the copy\'s own path is shown as standard input), and nothing is left', async () => {
    const { open } = await import('node:fs/promises');
    const probe = await open(tmp, 'r');
    const proto = Object.getPrototypeOf(probe) as { write: (...a: unknown[]) => Promise<unknown> };
    await probe.close();
    const real = proto.write;
    proto.write = () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' }));
    try {
      const e = await spoolStdin(Readable.from([Buffer.alloc(1 << 20, 1)]), never).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'IO', message: `copy ${STDIN_NAME} into ${tmp} (TMPDIR: it needs room for the whole archive): no space left on device; free space, then run again` });
    } finally {
      proto.write = real;
    }
    expect(await readdir(tmp)).toEqual([]);
  });

  it('refuses an empty input as no archive, and leaves nothing behind', async () => {
    const e = await spoolStdin(Readable.from([]), never).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TarportError);
    expect(e).toMatchObject({ code: 'BAD_INPUT', message: `${STDIN_NAME}: nothing came (0 bytes), not an archive` });
    expect(await readdir(tmp)).toEqual([]);
  });

  it('refuses a terminal before it reads: it would wait for a person to type an archive', async () => {
    const tty = Object.assign(Readable.from([Buffer.from('x')]), { isTTY: true });
    await expect(spoolStdin(tty, never)).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('docker save IMAGE | tarport push - --to URL') });
    expect(await readdir(tmp)).toEqual([]);
  });

  it('gives up on a writer that went quiet, bounded, and leaves nothing behind', async () => {
    const pipe = new PassThrough();
    pipe.write(Buffer.alloc(4096)); // some bytes, then silence: a hung docker save
    const t0 = Date.now();
    const e = await spoolStdin(pipe, never, 300).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'BAD_INPUT', message: `${STDIN_NAME}: nothing came for 0.3 s; the writer of the pipe seems stuck (no archive was published)` });
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await readdir(tmp)).toEqual([]);
  });

  it('stops at the command\'s signal (SIGTERM, SIGINT) while it copies, and leaves nothing behind', async () => {
    const pipe = new PassThrough();
    pipe.write(Buffer.alloc(4096)); // a writer that is still writing
    const stop = new AbortController();
    const copying = spoolStdin(pipe, stop.signal).catch((x: unknown) => x);
    setTimeout(() => stop.abort(new TarportError('ABORTED', 'interrupted by SIGTERM', { retryable: false })), 50);
    const t0 = Date.now();
    const e = await copying;
    expect(e).toMatchObject({ code: 'ABORTED' });
    expect(Date.now() - t0).toBeLessThan(5_000); // not the 10 min of the idle bound
    expect(await readdir(tmp)).toEqual([]);
  });

  it('fails with the reason of a pipe that broke before the copy began, and leaves nothing behind', async () => {
    const pipe = new PassThrough();
    pipe.destroy(new Error('the writer died at once'));
    await expect(spoolStdin(pipe, never)).rejects.toThrow('the writer died at once');
    expect(await readdir(tmp)).toEqual([]);
  });

  it('fails with the reason of a pipe that broke, and leaves nothing behind', async () => {
    const pipe = new PassThrough();
    pipe.write(Buffer.alloc(4096));
    setTimeout(() => pipe.destroy(new Error('the writer died')), 20);
    await expect(spoolStdin(pipe, never)).rejects.toThrow('the writer died');
    expect(await readdir(tmp)).toEqual([]);
  });
});

/**
 * A named pipe in `dir`, its writer, and its read end open, as a shell hands a pipe on as standard
 * input (the two opens wait for each other).
 */
async function fifo(dir: string) {
  const path = join(dir, 'pipe');
  execFileSync('mkfifo', [path]);
  const writer = createWriteStream(path);
  // a writer whose reader went away gets EPIPE: kept here for the test to look at
  const broken = new Promise<NodeJS.ErrnoException>((resolve) => writer.on('error', resolve));
  const reader = await open(path, 'r');
  return { writer, broken, reader };
}

/** The copy of an open pipe by its `cat`, into the test's TMPDIR; the pipe is then the copy's alone. */
async function pipeSpool(reader: FileHandle, signal: AbortSignal, opts: Parameters<typeof startPipeSpool>[2] = {}) {
  const s = await startPipeSpool(reader.fd, signal, opts);
  await reader.close();
  if (s === undefined) throw new Error('cat did not start');
  return s;
}

describe('startPipeSpool (standard input that is a pipe: a cat of its own copies it)', () => {
  let pipes: string;
  beforeEach(async () => {
    // beside the test's TMPDIR, not in it: TMPDIR must hold the copy only
    pipes = await mkdtemp(join(dirname(tmp), 'tarport-stdin-pipes-'));
  });
  afterEach(async () => {
    await rm(pipes, { recursive: true, force: true });
  });

  it('copies every byte into a file under TMPDIR, each shown to the tap in order and only once it is in the file', async () => {
    const bytes = Buffer.from(Array.from({ length: 6 << 20 }, (_, i) => (i * 7) % 251));
    const { writer, reader } = await fifo(pipes);
    const tapped: Buffer[] = [];
    // the tap's chunk is reused once it returns
    const s = await pipeSpool(reader, never, { tap: (c) => tapped.push(Buffer.from(c)) });
    expect(s.copied).toBe(true);
    // in pieces with pauses: the follower catches up and waits for more
    for (let i = 0; i < 6; i++) {
      writer.write(bytes.subarray(i << 20, (i + 1) << 20));
      await new Promise((r) => setTimeout(r, 20));
    }
    writer.end();
    await s.complete;
    expect(s.path.startsWith(tmp)).toBe(true);
    expect((await readFile(s.path)).equals(bytes)).toBe(true);
    expect(Buffer.concat(tapped).equals(bytes)).toBe(true);
    await s.remove();
    expect(await readdir(tmp)).toEqual([]);
  });

  it('refuses an empty pipe as no archive, and leaves nothing behind', async () => {
    const { writer, reader } = await fifo(pipes);
    const s = await pipeSpool(reader, never);
    writer.end();
    await expect(s.complete).rejects.toMatchObject({ code: 'BAD_INPUT', message: `${STDIN_NAME}: nothing came (0 bytes), not an archive` });
    expect(await readdir(tmp)).toEqual([]);
  });

  it('gives up on a writer that went quiet, bounded: its cat is gone (the writer gets EPIPE) and nothing is left', async () => {
    const { writer, broken, reader } = await fifo(pipes);
    const s = await pipeSpool(reader, never, { idleMs: 300 });
    writer.write(Buffer.alloc(4096)); // some bytes, then silence: a hung docker save
    const t0 = Date.now();
    await expect(s.complete).rejects.toMatchObject({ code: 'BAD_INPUT', message: `${STDIN_NAME}: nothing came for 0.3 s; the writer of the pipe seems stuck (no archive was published)` });
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(s.fault()).toMatchObject({ code: 'BAD_INPUT' });
    expect(await readdir(tmp)).toEqual([]);
    writer.write(Buffer.alloc(1 << 20)); // more than the pipe holds: only a reader could take it
    expect((await broken).code).toBe('EPIPE');
  });

  it("stops at the command's signal while it copies: the signal's reason, its cat gone, nothing left", async () => {
    const { writer, broken, reader } = await fifo(pipes);
    const stop = new AbortController();
    const s = await pipeSpool(reader, stop.signal);
    writer.write(Buffer.alloc(4096)); // a writer that is still writing
    setTimeout(() => stop.abort(new TarportError('ABORTED', 'interrupted by SIGTERM', { retryable: false })), 50);
    await expect(s.complete).rejects.toMatchObject({ code: 'ABORTED', message: 'interrupted by SIGTERM' });
    expect(await readdir(tmp)).toEqual([]);
    writer.write(Buffer.alloc(1 << 20));
    expect((await broken).code).toBe('EPIPE');
  });

  it('a tap that throws fails the copy with its fault and sees nothing more; its cat is gone and nothing is left', async () => {
    const { writer, broken, reader } = await fifo(pipes);
    let calls = 0;
    const s = await pipeSpool(reader, never, {
      tap: () => {
        calls++;
        throw new Error('tap broke');
      },
    });
    writer.write(Buffer.alloc(64 << 10, 1));
    const e = await s.complete.catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'IO', message: `copy ${STDIN_NAME} into ${tmp} (TMPDIR: it needs room for the whole archive): tap broke` });
    expect(s.fault()).toBe(e);
    writer.write(Buffer.alloc(1 << 20));
    expect((await broken).code).toBe('EPIPE');
    expect(calls).toBe(1);
    expect(await readdir(tmp)).toEqual([]);
  });

  it('reads a pipe whose writer already wrote and went: what is in it, at once', async () => {
    const { writer, reader } = await fifo(pipes);
    writer.end(Buffer.from('all there was'));
    await once(writer, 'close');
    const s = await pipeSpool(reader, never, { idleMs: 2_000 });
    await s.complete;
    expect(await readFile(s.path, 'utf8')).toBe('all there was');
    await s.remove();
  });

  it("a cat that fails is named with its words, exit 1's IO, and nothing is left", async () => {
    const notAPipe = await open(pipes, 'r'); // a folder: cat cannot read it
    const s = await pipeSpool(notAPipe, never);
    const e = await s.complete.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TarportError);
    expect(e).toMatchObject({ code: 'IO', retryable: false, message: expect.stringContaining(`copy ${STDIN_NAME} into ${tmp} (TMPDIR: it needs room for the whole archive): cat failed (exit 1): cat: `) as unknown });
    expect((e as Error).message).toContain('Is a directory');
    expect(await readdir(tmp)).toEqual([]);
  });

  it('without a cat to start, says so (undefined: the caller copies the pipe itself) and leaves nothing behind', async () => {
    const input = await open('/dev/null', 'r');
    const savedPath = process.env.PATH;
    process.env.PATH = pipes; // no cat here
    try {
      expect(await startPipeSpool(input.fd, never)).toBeUndefined();
    } finally {
      process.env.PATH = savedPath;
      await input.close();
    }
    expect(await readdir(tmp)).toEqual([]);
  });
});

/**
 * Runs `script` in /bin/sh, `$1`... being `args`, with `bin` first on PATH (a `cat` of the test's)
 * and TMPDIR `spool`: its exit code and standard error. `$T` runs the real CLI.
 */
async function shell(script: string, args: string[], bin: string, spool: string): Promise<{ code: number; stderr: string }> {
  const child = spawn('/bin/sh', ['-c', script, 'sh', ...args], {
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, TMPDIR: spool, T: join(ROOT, 'bin/tarport.js'), NODE: process.execPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const [code] = (await once(child, 'close')) as [number];
  return { code, stderr };
}

/** A `cat` script in a new folder `bin` (writeScript: written by a child). */
function fakeCat(bin: string, body: string): void {
  mkdirSync(bin);
  writeScript(join(bin, 'cat'), `#!/bin/sh\n${body}\n`);
}

describe('tarport push -', () => {
  it('publishes the archive piped into it as a file push would, and removes its copy', async () => {
    const dir = await tempDir();
    const [v1, v2] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    const spool = join(dir, 'tmp');
    await mkdir(spool);
    const r = await tarport(['push', '--init', '-', '--to', repo, '--json'], { TMPDIR: spool }, { pipe: v1! });
    expect(r.stderr).toContain(`published tarport-demo/hello:latest v1 (image) from ${STDIN_NAME} to file://${repo}`);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as { pushed: { archive: string; releases: { version: number; status: string }[] }[] };
    expect(doc.pushed.map((p) => [p.archive, p.releases.map((x) => `${x.status} v${x.version}`)])).toEqual([['-', ['published v1']]]);
    expect(await readdir(spool)).toEqual([]);
    // the same content again from a file: the same release, nothing new
    expect((await tarport(['push', v1!, '--to', repo])).stderr).toContain('unchanged tarport-demo/hello:latest: identical to v1');
    // and a file beside - in one run
    expect((await tarport(['push', v2!, '-', '--to', repo], { TMPDIR: spool }, { pipe: v1! })).code).toBe(0);
    const versions = (await tarport(['ls', repo])).stdout.split('\n').flatMap((l) => /^tarport-demo\/hello\s+latest\s+(\d+)/.exec(l)?.[1] ?? []);
    expect(versions).toEqual(['1', '2', '3']); // v2 from the file, then v1's content from the pipe again: the next version
  });

  it('through a shell pipe (a FIFO) a cat of its own copies the input: the same release, no copy left', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    const spool = join(dir, 'tmp');
    const bin = join(dir, 'bin');
    const log = join(dir, 'cat.log');
    await mkdir(spool);
    // a cat that says how it was called
    fakeCat(bin, `echo "called $*" >> "${log}"; exec /bin/cat "$@"`);
    const { code, stderr } = await shell('/bin/cat "$1" | "$NODE" "$T" push --init - --to "$2"', [v1!, repo], bin, spool);
    expect(code, stderr).toBe(0);
    expect(stderr).toContain(`published tarport-demo/hello:latest v1 (image) from ${STDIN_NAME} to file://${repo}`);
    expect(await readFile(log, 'utf8')).toBe('called \n'); // once, reading the pipe it was handed
    expect(await readdir(spool)).toEqual([]);
    // the same content from the file: nothing new, so the pipe's copy was whole
    expect((await tarport(['push', v1!, '--to', repo])).stderr).toContain('unchanged tarport-demo/hello:latest: identical to v1');
    // a named pipe redirected in, whose writer may be done before tarport starts: read, not waited on
    const named = join(dir, 'named');
    execFileSync('mkfifo', [named]);
    const { code: code2, stderr: said } = await shell('/bin/cat "$1" > "$2" & "$NODE" "$T" push - --to "$3" < "$2"', [v1!, named, repo], bin, spool);
    expect(code2, said).toBe(0);
    expect(said).toContain('unchanged tarport-demo/hello:latest: identical to v1');
    expect(await readFile(log, 'utf8')).toBe('called \ncalled \n');
    expect(await readdir(spool)).toEqual([]);
  });

  it("a cat stopped by someone else's SIGTERM fails the push with exit 1, naming it, and leaves no copy", async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const spool = join(dir, 'tmp');
    const bin = join(dir, 'bin');
    await mkdir(spool);
    // a cat that copies a little, then is stopped as `pkill cat` would
    fakeCat(bin, 'head -c 1000; kill -TERM $$');
    const { code, stderr } = await shell('/bin/cat "$1" | "$NODE" "$T" push --init - --to "$2"', [v1!, join(dir, 'repo')], bin, spool);
    expect(code, stderr).toBe(1);
    expect(stderr).toContain(`copy ${STDIN_NAME} into ${spool} (TMPDIR: it needs room for the whole archive): cat was stopped by SIGTERM`);
    expect(stderr).not.toContain('internal error');
    expect(await readdir(spool)).toEqual([]);
    expect(existsSync(join(dir, 'repo'))).toBe(false);
  });

  it('refuses nothing on its input, or an archive it cannot publish, with exit 2, a message naming standard input, no release and no copy left', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const spool = join(dir, 'tmp');
    await mkdir(spool);
    expect((await tarport(['init', repo])).code).toBe(0);
    const before = await filesBelow(repo);
    const r = await tarport(['push', '-', '--to', repo], { TMPDIR: spool }, { pipe: null });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${STDIN_NAME}: nothing came (0 bytes), not an archive`);
    // a root file system (docker export) without --name: the message names the input, not the copy
    const rootfs = join(dir, 'rootfs.tar');
    await writeTar(rootfs, [{ header: { name: 'etc/hostname', type: 'file', mode: 0o644 } as TarItem['header'], data: Buffer.from('box\n') }]);
    const unnamed = await tarport(['push', '-', '--to', repo], { TMPDIR: spool }, { pipe: rootfs });
    expect(unnamed.code).toBe(2);
    expect(unnamed.stderr).toContain(`${STDIN_NAME}: this is a root file system archive (docker export) and carries no image name; give one with --name NAME:TAG`);
    expect(unnamed.stderr).not.toContain('standard-input.tar');
    expect(await readdir(spool)).toEqual([]);
    expect(await filesBelow(repo)).toEqual(before); // no file written (the transaction's folders may stay)
    const twice = await tarport(['push', '-', '-', '--to', repo], { TMPDIR: spool }, { pipe: null });
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain(`- (${STDIN_NAME}) given twice`);
  });

  it("a warning about what came (a root file system that names a path twice) names standard input, on stderr and in --json", async () => {
    const dir = await tempDir();
    const rootfs = join(dir, 'rootfs.tar');
    const motd = (data: string) => ({ header: { name: 'etc/motd', type: 'file', mode: 0o644 } as TarItem['header'], data: Buffer.from(data) });
    await writeTar(rootfs, [motd('1\n'), motd('2\n')]);
    const r = await tarport(['push', '--init', '-', '--to', join(dir, 'repo'), '--name', 'box/root:1', '--json'], {}, { pipe: rootfs });
    expect(r.code, r.stderr).toBe(0);
    const said = `${STDIN_NAME}: the root file system holds "etc/motd" more than once: Docker's import (its classic image store) refuses such a tar ("duplicates of file paths not supported"), so those consumers will fail to load it; containerd and Podman take the last copy`;
    expect(r.stderr).toContain(`warning: ${said}`);
    expect(r.stderr).not.toContain('standard-input.tar');
    expect((JSON.parse(r.stdout) as { pushed: { archive: string; warnings?: string[] }[] }).pushed.map((p) => [p.archive, p.warnings])).toEqual([['-', [said]]]);
  });

  it('stopped by SIGTERM while it waits on standard input, after a file was pushed: exit 143, and --json still says what was pushed', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'push', '--init', v1!, '-', '--to', join(dir, 'repo'), '--json'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let [stdout, stderr] = ['', ''];
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => {
      stderr += c;
      // once: a second signal ends a command at once, without its document; the pipe stays open, so push waits on it
      if (!child.killed && stderr.includes('published tarport-demo/hello:latest v1')) child.kill('SIGTERM');
    });
    const [code] = (await once(child, 'close')) as [number];
    expect(code, stderr).toBe(143);
    const doc = JSON.parse(stdout) as { pushed: { archive: string }[]; failed: unknown[]; error: { code: string } };
    expect([doc.pushed.map((p) => p.archive), doc.failed, doc.error.code]).toEqual([[v1!], [], 'ABORTED']);
  });

  it('with --init, creates nothing where nothing or no archive came: the location stays as it was', async () => {
    const dir = await tempDir();
    const spool = join(dir, 'tmp');
    await mkdir(spool);
    const garbage = join(dir, 'garbage.bin');
    await writeFile(garbage, Buffer.alloc(4096, 'not a tar '));
    for (const [input, says] of [[null, 'nothing came (0 bytes)'], [garbage, 'not a tar archive']] as const) {
      const r = await tarport(['push', '--init', '-', '--to', join(dir, 'repo')], { TMPDIR: spool }, { pipe: input });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${STDIN_NAME}: ${says}`);
      expect(existsSync(join(dir, 'repo'))).toBe(false);
    }
  });

  it('reads a file redirected to it in place, without a copy', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    // a TMPDIR that does not exist: a copy would fail the push (root writes where modes forbid it)
    const r = await tarport(['push', '--init', '-', '--to', repo], { TMPDIR: join(dir, 'no-such-folder') }, { redirect: v1! });
    expect(r.stderr).toContain(`published tarport-demo/hello:latest v1 (image) from ${STDIN_NAME}`);
    expect(r.code).toBe(0);
    // and through a pipe the same TMPDIR is where the copy fails, named
    const piped = await tarport(['push', '-', '--to', repo], { TMPDIR: join(dir, 'no-such-folder') }, { pipe: v1! });
    expect(piped.code).toBe(1);
    expect(piped.stderr).toContain(`make a folder for ${STDIN_NAME} in ${join(dir, 'no-such-folder')} (TMPDIR)`);
  });
});
