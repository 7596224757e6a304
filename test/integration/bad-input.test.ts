import { randomBytes } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { filesBelow, fixture, readTar, tarport, tempDir, writeTar, type TarItem } from '../helpers.js';

// Each fixture is named after the failure it shows; each must be refused with exit 2, a message that
// names the file and the fault, nothing in the repository and nothing written beside the input.

type Maker = (items: TarItem[]) => TarItem[] | Buffer;

const manifestOf = (items: TarItem[]) => JSON.parse(items.find((i) => i.header.name === 'manifest.json')!.data.toString());
const withManifest = (items: TarItem[], m: unknown) =>
  items.map((i) => (i.header.name === 'manifest.json' ? { ...i, data: Buffer.from(JSON.stringify(m)) } : i));

const cases: [string, Maker, RegExp][] = [
  ['not-a-tar.tar', () => randomBytes(5000), /not a tar archive/],
  ['empty.tar', () => Buffer.alloc(0), /empty file/],
  ['truncated.tar', () => Buffer.alloc(0), /truncated/], // filled in below from the real archive
  [
    'manifest-points-outside.tar',
    (items) => {
      const m = manifestOf(items);
      m[0].Layers[0] = '../../../etc/passwd';
      return withManifest(items, m);
    },
    /points outside the archive/,
  ],
  [
    'manifest-points-at-missing-file.tar',
    (items) => {
      const m = manifestOf(items);
      m[0].Layers[1] = 'no-such-layer/layer.tar';
      return withManifest(items, m);
    },
    /not in the archive/,
  ],
  [
    'layer-does-not-match-diff-id.tar',
    (items) => {
      const m = manifestOf(items);
      const last = m[0].Layers.at(-1);
      // a valid tar with other content in place of the last layer
      return items.map((i) => (i.header.name.replace(/^\.\//, '') === last ? { ...i, data: Buffer.concat([Buffer.from(i.data.subarray(0, 512)).fill(0, 0, 512), Buffer.alloc(i.data.length - 512)]) } : i));
    },
    /does not match its diff_id/,
  ],
  [
    'layer-is-symlink-out-of-archive.tar',
    (items) => {
      const m = manifestOf(items);
      const first = m[0].Layers[0];
      return items.map((i) => (i.header.name.replace(/^\.\//, '') === first ? { header: { ...i.header, type: 'symlink', linkname: '/etc/passwd', size: 0 }, data: Buffer.alloc(0) } : i));
    },
    /points outside the archive/,
  ],
  [
    'invalid-image-name.tar',
    (items) => {
      const m = manifestOf(items);
      m[0].RepoTags = ['Not A Valid/Name:1'];
      return withManifest(items, m);
    },
    /invalid image name/,
  ],
  [
    'config-not-matching-its-name.tar',
    // the config manifest.json names: <hex>.json from Docker 20.10, blobs/sha256/<hex> from Docker 25+
    (items) => {
      const config = manifestOf(items)[0].Config;
      return items.map((i) => (i.header.name.replace(/^\.\//, '') === config ? { ...i, data: Buffer.from(i.data.toString().replace('"architecture"', '"architecture" ')) } : i));
    },
    /does not match its name/,
  ],
];

describe('bad input is refused cleanly', () => {
  let dir: string;
  let source: TarItem[];

  beforeAll(async () => {
    dir = await tempDir();
    source = await readTar(fixture('app-v1.tar'));
  });

  it.each(cases)('%s', async (name, make, msg) => {
    const input = join(dir, name);
    if (name === 'truncated.tar') {
      const full = await readFile(fixture('app-v1.tar'));
      await writeFile(input, full.subarray(0, Math.floor(full.length / 2)));
    } else {
      const made = make(source.map((i) => ({ header: { ...i.header }, data: i.data })));
      if (Buffer.isBuffer(made)) await writeFile(input, made);
      else await writeTar(input, made);
    }
    const before = await filesBelow(dir);
    const repo = join(await tempDir(), 'repo');
    const r = await tarport(['push', '--init', input, '--to', repo]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(input);
    expect(r.stderr).toMatch(msg);
    // nothing at all: with --init the repository's identity comes with the first object kept
    expect(await filesBelow(repo)).toEqual([]);
    expect(await filesBelow(dir)).toEqual(before);
  });

  it('a bad archive next to a good one: the good one is published, the exit code says a fault', async () => {
    const repo = join(await tempDir(), 'repo');
    const bad = join(dir, 'bad-beside-good.tar');
    await writeFile(bad, randomBytes(2048));
    const good = join(dir, 'good.tar');
    await copyFile(fixture('app-v1.tar'), good);
    const r = await tarport(['push', '--init', bad, good, '--to', repo]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('published tarport-fixture/app:1 v1');
    expect(r.stderr).toContain(bad);
  });

  it('refuses an invalid --name and an unknown --compress with exit 2', async () => {
    const repo = join(await tempDir(), 'repo');
    const r1 = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', 'team/App:1']);
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(/invalid image name/);
    const r2 = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--compress', 'lz4']);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/--compress "lz4"/);
    expect(await filesBelow(repo)).toEqual([]);
  });

  it('a path that holds no repository (a typo, a stick not mounted) is an error for ls, pull and sync, not an empty list', async () => {
    const missing = join(await tempDir(), 'not-mounted');
    for (const args of [['ls', missing], ['pull', '--from', missing, '--state', join(missing, '..', 'state')], ['sync', '--init', missing, join(missing, '..', 'dst')]]) {
      const r = await tarport(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain(`file://${missing}`);
      expect(r.stderr).toMatch(/no catalog/);
    }
  });
});
