import { cp, lstat, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measured } from '../corpus/measure.js';
import { SECRET, repoCases, type Command, type RepoCase } from '../corpus/repos.js';
import { dockerSave, tarBytes } from '../corpus/tarwriter.js';
import { emptyDaemon, realEnv, tarport, tempDir } from '../helpers.js';

// The hostile repository corpus (test/corpus/repos.ts) over the directory transport: every case,
// against every command it concerns, is refused with its exit code (3; 1 for I/O), ends in bounded
// time and memory, prints no byte of a file outside the repository and no terminal escape, and
// writes or deletes nothing outside the repository and the consumer's own state.

const env = realEnv();
/** Peak RSS of any run: the CLI alone is ~70 MiB; a 1.5 GB record must not be read. */
const PEAK_MIB = 192;
/** A run that has not ended by then hangs (a FIFO, an endless object); the worst honest one takes ~5 s. */
const LIMIT_MS = 60_000;

/** Every path below `dir` (links not followed) with its size and mtime. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string) => {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      const st = await lstat(p);
      out[p] = `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`;
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}

function argsFor(cmd: Command, repo: string, work: string): string[] {
  switch (cmd) {
    case 'ls':
      return ['ls', repo];
    case 'pull':
      return ['pull', '--from', repo, '--state', join(work, 'state')];
    case 'check':
      return ['check', repo];
    case 'gc':
      return ['gc', repo, '--keep', '1', '--grace', '0s'];
    case 'sync':
      return ['sync', '--init', repo, join(work, 'dst')];
  }
}

describe('hostile repository corpus over the directory transport', () => {
  let base: string;
  let honest: string;
  beforeAll(async () => {
    base = await tempDir('tarport-repo-corpus-');
    const archive = join(base, 'app.tar');
    await writeFile(archive, tarBytes(dockerSave('corpus/app:1').items));
    honest = join(base, 'honest');
    const r = await tarport(['push', '--init', archive, '--to', honest]);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  const runs = repoCases.flatMap((c) => c.commands.map((cmd) => [`${c.name} / ${cmd} (${c.defence})`, c, cmd] as const));
  it.each(runs)('%s', async (_title, c: RepoCase, cmd: Command) => {
    const work = join(base, `${c.name}-${cmd}`);
    const repo = join(work, 'repo');
    const outside = join(work, 'outside');
    await mkdir(outside, { recursive: true });
    await cp(honest, repo, { recursive: true });
    await writeFile(join(outside, 'host-file'), `${SECRET}\n`);
    await c.make(repo, outside);
    const before = await snapshot(outside);
    // a daemon that has the layers already reads none of them: start every pull from an empty one
    if (cmd === 'pull') await emptyDaemon('consumer');
    const r = await measured(argsFor(cmd, repo, work), { DOCKER_HOST: env.consumer }, LIMIT_MS);
    console.log(`${c.name} / ${cmd}: exit ${r.code}, ${r.ms} ms, ${r.peakMiB} MiB${r.hung ? ', HUNG' : ''}`);
    expect(r.hung, `${cmd} did not end within ${LIMIT_MS} ms`).toBe(false);
    expect(c.codes, `exit ${r.code}: ${r.stderr.slice(-600)}`).toContain(r.code);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
    expect(r.stdout + r.stderr).not.toMatch(/[\u001b\u0007\u009b]/);
    expect(await snapshot(outside)).toEqual(before);
    expect(r.peakMiB).toBeLessThan(PEAK_MIB);
    await rm(work, { recursive: true, force: true });
  });

  // sync between two directories copies objects file to file, beside the transport's streams: the
  // destination's folders are checked as the transport checks them, and nothing is written behind a link
  it.each(['blobs', 'blobs/sha256', 'tarport', 'tarport/releases'])('sync into a destination whose %s links out: refused (exit 3), nothing written outside', async (rel) => {
    const work = join(base, `sync-dst-${rel.replace(/\//g, '_')}`);
    const dst = join(work, 'dst');
    const outside = join(work, 'outside');
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'host-file'), `${SECRET}\n`);
    await mkdir(join(dst, dirname(rel)), { recursive: true });
    await symlink(outside, join(dst, rel));
    const before = await snapshot(outside);
    const r = await measured(['sync', '--init', honest, dst], {}, LIMIT_MS);
    expect(r.code, r.stderr.slice(-600)).toBe(3);
    expect(r.stderr).toContain('is a symbolic link');
    expect(r.stdout + r.stderr).not.toContain(SECRET);
    expect(await snapshot(outside)).toEqual(before);
    await rm(work, { recursive: true, force: true });
  });

  it('a catalog at sequence 2^53-1 is not pushed to an unreadable 2^53: push refuses (exit 3) and the catalog stays', async () => {
    const work = join(base, 'seq-push');
    const repo = join(work, 'repo');
    await cp(honest, repo, { recursive: true });
    const cat = join(repo, 'tarport', 'catalog.json');
    await writeFile(cat, (await readFile(cat, 'utf8')).replace(/"sequence": \d+/, '"sequence": 9007199254740991'));
    const before = await readFile(cat, 'utf8');
    const archive = join(work, 'v2.tar');
    await writeFile(archive, tarBytes(dockerSave('corpus/app:2').items));
    const r = await measured(['push', '--init', archive, '--to', repo], {}, LIMIT_MS);
    expect(r.code, r.stderr).toBe(3);
    expect(await readFile(cat, 'utf8')).toBe(before);
  });
});
