import { readFile, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// tarport check and tarport gc on real pushes.

const env = realEnv();

describe('check', () => {
  it('passes a sound signed repository and names every fault of a damaged one (exit 3)', async () => {
    const dir = await tempDir();
    expect((await tarport(['keys', 'generate', '--uid', 'p <p@example.invalid>', '--out', join(dir, 'p'), '--type', 'ecc'])).code).toBe(0);
    expect((await tarport(['keys', 'generate', '--uid', 'q <q@example.invalid>', '--out', join(dir, 'q'), '--type', 'ecc'])).code).toBe(0);
    const repo = join(dir, 'repo');
    for (const f of ['app-v1.tar', 'app-v2.tar']) expect((await tarport(['push', '--init', fixture(f), '--to', repo, '--sign-key', join(dir, 'p.sec.asc')])).code).toBe(0);
    const ok = await tarport(['check', repo, '--trust', join(dir, 'p.pub.asc'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ releases: 2, faults: [] });
    const stranger = await tarport(['check', repo, '--trust', join(dir, 'q.pub.asc'), '--json']);
    expect(stranger.code).toBe(3);
    expect(JSON.parse(stranger.stdout).faults.length).toBe(3); // the catalog and two records
    // damage an object
    const blobs = join(repo, 'blobs/sha256');
    const [victim] = (await readdir(blobs)).filter((b) => /^[0-9a-f]{64}$/.test(b));
    const data = await readFile(join(blobs, victim!));
    data[0]! ^= 1;
    await writeFile(join(blobs, victim!), data);
    const bad = await tarport(['check', repo, '--json']);
    expect(bad.code).toBe(3);
    expect(JSON.parse(bad.stdout).faults.map((f: { what: string }) => f.what).join(' ')).toContain(victim!);
  });
});

describe('gc', () => {
  it('keeps the newest N versions per tag and the objects they name; --dry-run removes nothing; what stays still loads', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    for (const f of ['app-v1.tar', 'app-v2.tar', 'app-export.tar']) {
      expect((await tarport(['push', '--init', fixture(f), '--to', repo, '--name', 'tarport-test/gc:1'])).code).toBe(0);
    }
    const before = await filesBelow(repo);
    const dry = await tarport(['gc', repo, '--keep', '1', '--grace', '0s', '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout).releasesRemoved).toEqual(['tarport-test/gc:1 v1', 'tarport-test/gc:1 v2']);
    expect(await filesBelow(repo)).toEqual(before);
    const gc = await tarport(['gc', repo, '--keep', '1', '--grace', '0s', '--json']);
    expect(gc.code, gc.stderr).toBe(0);
    expect(JSON.parse(gc.stdout).objectsRemoved.length).toBeGreaterThan(3);
    const ls = JSON.parse((await tarport(['ls', repo, '--json'])).stdout);
    expect(ls.releases.map((r: { version: number }) => r.version)).toEqual([3]);
    expect((await tarport(['check', repo])).code).toBe(0);
    const p = await tarport(['pull', '--from', repo, '--state', join(dir, 'state')], { DOCKER_HOST: env.consumer });
    expect(p.code, p.stderr).toBe(0);
    // a young object (a publish under way) is left alone
    const again = await tarport(['gc', repo, '--keep', '1', '--json']);
    expect(JSON.parse(again.stdout).objectsRemoved).toEqual([]);
  });
});
