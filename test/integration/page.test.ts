import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// index.html and acknowledgements, end to end: a repository that must exist (tarport init, or --init),
// signed, encrypted, export and multi-version pushes, a pull that leaves an acknowledgement, and the
// page as a real browser (Debian's chromium, headless) renders it, checked against `ls --json`.

const run = promisify(execFile);
const env = realEnv();

interface Listed { name: string; tag: string; version: number; created: string; signer: string | null; signerUserId: string | null; encrypted: boolean; digest: string; current: boolean; hosts: { host: string; hostname: string }[] }

/** The page as Chromium renders it (its DOM after layout) and a screenshot kept in the run dir. */
async function render(page: string, shot: string): Promise<string> {
  const base = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'];
  const dir = await tempDir('tarport-chromium-');
  const t0 = Date.now();
  const [dom] = await Promise.all([
    run('chromium', [...base, `--user-data-dir=${join(dir, 'a')}`, '--dump-dom', `file://${page}`], { timeout: 90_000, maxBuffer: 16 << 20 }),
    run('chromium', [...base, `--user-data-dir=${join(dir, 'b')}`, `--screenshot=${shot}`, '--window-size=1400,1200', `file://${page}`], { timeout: 90_000 }),
  ]);
  console.log(`chromium: ${Date.now() - t0} ms`);
  return dom.stdout;
}

/** The table rows of the rendered page, as the text of their cells. */
function rows(dom: string): string[][] {
  const text = (h: string) => h.replace(/<[^>]*>/g, '').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&').trim();
  return [...dom.matchAll(/<tr[^>]*>([\s\S]*?)<\/tr>/g)].map((m) => [...m[1]!.matchAll(/<td>([\s\S]*?)<\/td>/g)].map((c) => text(c[1]!)));
}

async function keys(dir: string, name: string): Promise<{ pub: string; sec: string }> {
  const r = await tarport(['keys', 'generate', '--uid', `${name} <${name}@example.invalid>`, '--out', join(dir, name), '--type', 'ecc', '--json']);
  expect(r.code, r.stderr).toBe(0);
  const doc = JSON.parse(r.stdout) as { publicKey: string; privateKey: string };
  return { pub: doc.publicKey, sec: doc.privateKey };
}

describe('the page and acknowledgements', () => {
  it('push to a location without a repository is refused and leaves nothing; after init, the page renders every release as ls --json lists it, with the hosts that pulled it', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const id = randomBytes(3).toString('hex');
    const refused = await tarport(['push', fixture('app-v1.tar'), '--to', repo, '--name', `tarport-test/page-${id}:1`]);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toContain(`tarport init file://${repo}`);
    await expect(stat(repo)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await tarport(['init', repo])).code).toBe(0);

    const signer = await keys(dir, 'producer');
    const site = await keys(dir, 'site');
    const app = `tarport-test/page-${id}`;
    for (const args of [
      [fixture('app-v1.tar'), '--name', `${app}:1`, '--sign-key', signer.sec],
      [fixture('app-v2.tar'), '--name', `${app}:1`, '--sign-key', signer.sec],
      [fixture('app-v1.tar'), '--name', `${app}-secret:1`, '--encrypt-to', site.pub, '--sign-key', signer.sec],
      [fixture('app-export.tar'), '--name', `${app}-rootfs:1`],
    ]) {
      const r = await tarport(['push', ...args, '--to', repo]);
      expect(r.code, r.stderr).toBe(0);
    }
    const pulled = await tarport(['pull', `${app}:1`, '--from', repo, '--state', join(dir, 'state'), '--host-id', `edge-${id}`], { DOCKER_HOST: env.consumer });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stderr).toContain(`acknowledged 1 release(s) in file://${repo} as host edge-${id}`);
    // --no-ack: a second host loads the same release and leaves nothing
    const quiet = await tarport(['pull', `${app}:1`, '--from', repo, '--state', join(dir, 'state2'), '--host-id', `quiet-${id}`, '--no-ack'], { DOCKER_HOST: env.consumer });
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(await readdir(join(repo, 'tarport/acks'))).toEqual([`edge-${id}.json`]);

    const listed = (JSON.parse((await tarport(['ls', repo, '--json'])).stdout) as { releases: Listed[] }).releases;
    expect(listed).toHaveLength(4);
    const current = listed.find((r) => r.tag === '1' && r.name === app && r.version === 2)!;
    expect(current.hosts.map((h) => h.host)).toEqual([`edge-${id}`]);
    expect(current.signerUserId).toBe('producer <producer@example.invalid>');

    const shots = join(process.env.TP_RUN ?? dir, 'artifacts');
    await mkdir(shots, { recursive: true });
    const shot = join(shots, `index-page-${id}.png`);
    const dom = await render(join(repo, 'index.html'), shot);
    expect((await readFile(shot)).subarray(1, 4).toString()).toBe('PNG');
    expect(dom).not.toContain('<script');
    const table = rows(dom).filter((r) => r.length > 0);
    for (const l of listed) {
      const row = table.find((r) => r.includes(l.digest));
      expect(row, `${l.name}:${l.tag} v${l.version}`).toBeDefined();
      expect(row![0]).toBe(`v${l.version}${l.current ? ' current' : ''}`);
      expect(row![1]).toBe(l.created);
      // the user id the signature names, then the fingerprint (tags stripped: no separator)
      expect(row![6]).toBe(l.signer ? `${l.signerUserId ?? ''}${l.signer}` : 'not signed');
      expect(row![7]).toBe(l.encrypted ? 'yes' : 'no');
      expect(row![9]).toEqual(l.hosts.length ? expect.stringContaining(`${l.hosts[0]!.hostname} (${l.hosts[0]!.host}, `) : 'none');
    }
    expect(dom).toContain(`tarport pull --from REPOSITORY ${app}-rootfs:1`);
    expect(table.find((r) => r.includes(current.digest))![5]).toMatch(/^\d+ \(\d+ shared with other versions\)$/);
    expect(table.find((r) => r.some((c) => c.startsWith('sha256:') && listed.find((l) => l.digest === c)?.encrypted))![3]).toBe('unknown (config encrypted)');
    // check flags nothing of the page or the acknowledgements
    const check = JSON.parse((await tarport(['check', repo, '--json'])).stdout) as { faults: unknown[]; warnings: unknown[] };
    expect(check).toMatchObject({ faults: [], warnings: [] });
  }, 240_000);

  it('sync to an empty stick needs --init (it takes the source identity); acks made on the stick travel back with the next sync', async () => {
    const dir = await tempDir();
    const high = join(dir, 'high');
    const stick = join(dir, 'stick');
    const tag = `tarport-test/stick-${randomBytes(3).toString('hex')}:1`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', high, '--name', tag])).code).toBe(0);
    const refused = await tarport(['sync', high, stick]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--init');
    expect(await filesBelow(stick)).toEqual([]);
    expect((await tarport(['sync', '--init', high, stick])).code).toBe(0);
    expect(await readFile(join(stick, 'tarport/format.json'), 'utf8')).toBe(await readFile(join(high, 'tarport/format.json'), 'utf8'));
    expect(await readFile(join(stick, 'index.html'), 'utf8')).toContain(tag);
    // the low side pulls from the stick and leaves its acknowledgement there
    const low = await tarport(['pull', '--from', stick, '--state', join(dir, 'low'), '--host-id', 'low-1'], { DOCKER_HOST: env.consumer });
    expect(low.code, low.stderr).toBe(0);
    const back = await tarport(['sync', stick, high]);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stderr).toContain('acknowledgements: 1 host(s) carried');
    const ls = JSON.parse((await tarport(['ls', high, '--json'])).stdout) as { releases: Listed[] };
    expect(ls.releases[0]!.hosts.map((h) => h.host)).toEqual(['low-1']);
    expect(await readFile(join(high, 'index.html'), 'utf8')).toContain('(low-1, ');
  });

  it('watch --once into a location without a repository keeps the file and says how to create one', async () => {
    const dir = await tempDir();
    const drop = join(dir, 'drop');
    await mkdir(drop);
    await copyFile(fixture('app-v1.tar'), join(drop, 'app.tar'));
    const r = await tarport(['watch', drop, '--to', join(dir, 'missing'), '--once', '--settle', '200ms']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`tarport init file://${join(dir, 'missing')}`);
    expect(r.stderr).toContain('left in place for the next run');
    expect(await readdir(drop)).toContain('app.tar');
    expect(await filesBelow(join(drop, 'done'))).toEqual([]);
    expect(await filesBelow(join(dir, 'missing'))).toEqual([]);
  });
});
