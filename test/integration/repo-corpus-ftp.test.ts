import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLyingFtp, type Lies } from '../corpus/lyingftp.js';
import { measured } from '../corpus/measure.js';
import { dockerSave, tarBytes } from '../corpus/tarwriter.js';
import { emptyDaemon, realEnv, tarport, tempDir } from '../helpers.js';

// The hostile repository corpus over FTP: an honest repository served by a scripted server of the
// tests' own (test/corpus/lyingftp.ts) that lies: files and listings without end, wrong SIZE replies.
// Every run ends in bounded time and memory, reads no further than the caps, and refuses (exit 3).

const env = realEnv();
const PEAK_MIB = 192;
const LIMIT_MS = 90_000;
/** The most a refused run may have pulled from an endless file: the 64 MiB catalog cap and buffers. */
const MAX_READ = 96 << 20;

interface FtpCase {
  readonly name: string;
  readonly lies: (record: string, blob: string) => Lies;
  readonly commands: readonly ('ls' | 'pull' | 'check' | 'gc' | 'sync')[];
  readonly codes: readonly number[];
}

const cases: readonly FtpCase[] = [
  { name: 'honest-server', lies: () => ({}), commands: ['ls', 'check'], codes: [0] },
  { name: 'catalog-without-end', lies: () => ({ endlessRetr: ['/tarport/catalog.json'] }), commands: ['ls', 'pull', 'check', 'sync'], codes: [3] },
  { name: 'record-without-end', lies: (record) => ({ endlessRetr: [record] }), commands: ['pull', 'check', 'sync'], codes: [3] },
  { name: 'blob-without-end', lies: (_r, blob) => ({ endlessRetr: [blob] }), commands: ['pull', 'check', 'sync'], codes: [3] },
  // only the commands that list these folders (sync reads the catalog; check reads the objects records name)
  // a listing is read on a data connection of the transport's own, capped (32 MiB, 250,000 entries)
  { name: 'releases-listing-without-end', lies: () => ({ endlessList: ['/tarport/releases'] }), commands: ['check', 'gc'], codes: [3] },
  { name: 'blobs-listing-without-end', lies: () => ({ endlessList: ['/blobs/sha256'] }), commands: ['gc'], codes: [3] },
  // a size is a claim: content is checked against the signed record, never sized by SIZE
  { name: 'size-replies-say-a-petabyte', lies: () => ({ size: () => 1e15 }), commands: ['ls', 'pull', 'check', 'sync'], codes: [0, 3] },
  { name: 'size-replies-say-one-byte', lies: () => ({ size: () => 1 }), commands: ['ls', 'pull', 'check', 'sync'], codes: [0, 3] },
];

describe('hostile repository corpus over a lying FTP server', () => {
  let base: string;
  let honest: string;
  let record: string;
  let blob: string;
  beforeAll(async () => {
    base = await tempDir('tarport-ftp-corpus-');
    const archive = join(base, 'app.tar');
    await writeFile(archive, tarBytes(dockerSave('corpus/app:1').items));
    honest = join(base, 'honest');
    const r = await tarport(['push', '--init', archive, '--to', honest]);
    expect(r.code, r.stderr).toBe(0);
    const ls = JSON.parse((await tarport(['ls', honest, '--json'])).stdout) as { releases: { record?: string; layers?: unknown }[] };
    expect(ls.releases).toHaveLength(1);
    const { readdir, readFile } = await import('node:fs/promises');
    const tagDir = join(honest, 'tarport/releases/corpus%2Fapp/1');
    record = `/tarport/releases/corpus%2Fapp/1/${(await readdir(tagDir))[0]}`;
    const rec = JSON.parse(await readFile(join(honest, record), 'utf8')) as { layers: { digest: string }[] };
    blob = `/blobs/sha256/${rec.layers[0]!.digest.slice(7)}`;
  });
  afterAll(async () => {
    const { rm } = await import('node:fs/promises');
    await rm(base, { recursive: true, force: true });
  });

  const runs = cases.flatMap((c) => c.commands.map((cmd) => [`${c.name} / ${cmd}`, c, cmd] as const));
  it.each(runs)('%s', async (_t, c, cmd) => {
    const server = await startLyingFtp(honest, c.lies(record, blob));
    try {
      const url = `ftp://corpus@127.0.0.1:${server.port}/`;
      const work = await tempDir('tarport-ftp-case-');
      const args = {
        ls: ['ls', url],
        pull: ['pull', '--from', url, '--state', join(work, 'state')],
        check: ['check', url],
        gc: ['gc', url, '--keep', '1', '--grace', '0s', '--dry-run'],
        sync: ['sync', '--init', url, join(work, 'dst')],
      }[cmd];
      // a daemon that has the layers already reads none of them: start every pull from an empty one
      if (cmd === 'pull') await emptyDaemon('consumer');
      const r = await measured(args, { TARPORT_PASSWORD: 'corpus', DOCKER_HOST: env.consumer }, LIMIT_MS);
      console.log(`${c.name} / ${cmd}: exit ${r.code}, ${r.ms} ms, ${r.peakMiB} MiB, ${server.sent()} bytes sent${r.hung ? ', HUNG' : ''}`);
      expect(r.hung, `${cmd} did not end within ${LIMIT_MS} ms`).toBe(false);
      expect(c.codes, `exit ${r.code}: ${r.stderr.slice(-600)}`).toContain(r.code);
      expect(r.peakMiB).toBeLessThan(PEAK_MIB);
      expect(server.sent()).toBeLessThan(MAX_READ);
      expect(r.stdout + r.stderr).not.toMatch(/[\u001b\u0007]/);
    } finally {
      await server.close();
    }
  });
});
