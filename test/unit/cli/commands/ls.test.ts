// src/cli/commands/ls.ts: what ls lists of a repository that holds a damaged record.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../../../src/archive/index.js';
import { SMALL, tarportInProcess, tempDir } from '../../../helpers.js';

describe('ls of a repository that holds a record that does not read', () => {
  it('lists every other release, names the damaged one (a warning, and unreadable in --json), and exits 3', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const [v1, v2] = await writeDemoArchives(dir, undefined, SMALL);
    expect((await tarportInProcess(['push', '--init', v1!, v2!, '--to', repo])).code).toBe(0);
    // a stray file that names itself a record of the tag, and is none
    const stray = '00000003-deadbeefdeadbeef.json';
    await writeFile(join(repo, 'tarport', 'releases', 'tarport-demo%2Fhello', 'latest', stray), '{"not": "a record"}');
    const r = await tarportInProcess(['ls', repo, '--json']);
    expect(r.code, r.stderr).toBe(3);
    const doc = JSON.parse(r.stdout) as { releases: { name: string; tag: string; version: number }[]; unreadable: { version: number; record: string; error: { code: string } }[] };
    expect(doc.releases.map((x) => `${x.name}:${x.tag} v${x.version}`)).toEqual(['tarport-demo/hello:latest v1', 'tarport-demo/hello:latest v2']);
    expect(doc.unreadable.map((u) => [u.version, u.record, u.error.code])).toEqual([[3, stray, 'INTEGRITY']]);
    expect(r.stderr).toContain(`tarport-demo/hello:latest v3 not listed: release record tarport-demo/hello:latest v3 (tarport/releases/tarport-demo%2Fhello/latest/${stray}): `);
    // --latest: the newest release that reads (the catalog's), the damaged one above it named
    const latest = await tarportInProcess(['ls', repo, '--latest', '--json']);
    expect(latest.code).toBe(3);
    const l = JSON.parse(latest.stdout) as typeof doc;
    expect([l.releases.map((x) => `${x.name}:${x.tag} v${x.version}`), l.unreadable.map((u) => u.version)]).toEqual([['tarport-demo/hello:latest v2'], [3]]);
  });
});
