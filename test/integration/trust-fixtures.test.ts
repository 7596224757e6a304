import { randomBytes } from 'node:crypto';
import { copyFile, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { docker, emptyDaemon, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// Repositories that lie, each named after the failure it shows, made from real pushes with real
// keys; every one is refused with exit 3 and nothing reaches the consumer daemon.

const env = realEnv();
let dir: string;
let producerPub: string;
let producerSec: string;
let strangerSec: string;

beforeAll(async () => {
  // what the daemon holds decides which objects a pull reads: start from an empty one
  await emptyDaemon('consumer');
  dir = await tempDir();
  for (const who of ['producer', 'stranger']) {
    const r = await tarport(['keys', 'generate', '--uid', `${who} <${who}@example.invalid>`, '--out', join(dir, who), '--type', 'ecc']);
    expect(r.code, r.stderr).toBe(0);
  }
  producerPub = join(dir, 'producer.pub.asc');
  producerSec = join(dir, 'producer.sec.asc');
  strangerSec = join(dir, 'stranger.sec.asc');
});

async function signedRepo(name: string, tag: string, extra: string[] = [], key = producerSec): Promise<string> {
  const repo = join(dir, `${name}-${randomBytes(3).toString('hex')}`);
  const r = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', tag, '--sign-key', key, ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return repo;
}

const records = async (repo: string) => (await filesBelow(join(repo, 'tarport/releases'))).filter((f) => f.endsWith('.json'));

// each row: the fixture's name, how it is made, what the refusal says
const fixtures: [string, (tag: string) => Promise<{ repo: string; state?: string; trust: boolean }>, RegExp][] = [
  [
    'tampered-blob',
    async (tag) => {
      const repo = await signedRepo('tampered-blob', tag, ['--compress', 'none']);
      const blobs = join(repo, 'blobs/sha256');
      let big = '';
      let size = 0;
      for (const b of await readdir(blobs)) {
        const n = (await readFile(join(blobs, b))).length;
        if (n > size) [big, size] = [b, n];
      }
      const data = await readFile(join(blobs, big));
      data[data.length >> 1]! ^= 0xff;
      await writeFile(join(blobs, big), data);
      return { repo, trust: true };
    },
    /digest mismatch/,
  ],
  [
    'tampered-record',
    async (tag) => {
      const repo = await signedRepo('tampered-record', tag);
      const [rec] = await records(repo);
      const p = join(repo, 'tarport/releases', rec!);
      await writeFile(p, (await readFile(p, 'utf8')).replace('"kind": "image"', '"kind": "image" '));
      return { repo, trust: true };
    },
    /digest mismatch/,
  ],
  ['wrong-signer', async (tag) => ({ repo: await signedRepo('wrong-signer', tag, [], strangerSec), trust: true }), /not among the trusted keys/],
  [
    'replayed-old-catalog',
    async (tag) => {
      const repo = await signedRepo('replayed', tag);
      await copyFile(join(repo, 'tarport/catalog.json'), join(dir, 'old.json'));
      expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo, '--name', tag, '--sign-key', producerSec])).code).toBe(0);
      const state = join(dir, `state-${randomBytes(3).toString('hex')}`);
      const first = await tarport(['pull', '--from', repo, '--state', state, '--trust', producerPub], { DOCKER_HOST: env.consumer });
      expect(first.code, first.stderr).toBe(0);
      await docker('consumer', 'rmi', tag); // so "nothing loaded" below means this run loaded nothing
      await copyFile(join(dir, 'old.json'), join(repo, 'tarport/catalog.json'));
      // its signature is still in tarport/catalogs/ (named by its content): a replay needs only the catalog
      return { repo, state, trust: true };
    },
    /older than v2 loaded before \(the catalog is an older copy, sequence 1 below 2 accepted: replayed/,
  ],
  ['expired-catalog', async (tag) => ({ repo: await signedRepo('expired', tag, ['--catalog-ttl', '1ms']), trust: true }), /expired/],
  [
    'record-pointing-at-another-tags-release',
    async (tag) => {
      // mix and match: the catalog entry of one tag swapped for another tag's (valid) record. The
      // signed catalog stops this first; without --trust the record's own name and tag stop it.
      const repo = await signedRepo('mixed', tag);
      expect((await tarport(['push', '--init', fixture('app-v2.tar'), '--to', repo, '--name', `${tag}-other`, '--sign-key', producerSec])).code).toBe(0);
      const catPath = join(repo, 'tarport/catalog.json');
      const cat = JSON.parse(await readFile(catPath, 'utf8'));
      const [mine, other] = [cat.releases.find((e: { tag: string }) => e.tag === tag.split(':')[1]), cat.releases.find((e: { tag: string }) => e.tag !== tag.split(':')[1])];
      const from = (await records(repo)).find((f) => f.endsWith(other.record))!;
      const to = join(repo, 'tarport/releases', (await records(repo)).find((f) => f.endsWith(mine.record))!.replace(mine.record, other.record));
      await copyFile(join(repo, 'tarport/releases', from), to);
      Object.assign(mine, { record: other.record, digest: other.digest, size: other.size });
      await writeFile(catPath, JSON.stringify(cat, null, 2) + '\n');
      return { repo, trust: false };
    },
    /describes .* not what its path says/,
  ],
];

describe('trust fixtures: a repository that lies is refused', () => {
  it.each(fixtures)('%s', async (_name, make, msg) => {
    const tag = `tarport-test/lie-${randomBytes(3).toString('hex')}:1`;
    const { repo, state, trust } = await make(tag);
    await new Promise((r) => setTimeout(r, 20));
    const r = await tarport(['pull', '--from', repo, '--state', state ?? join(dir, `s-${randomBytes(3).toString('hex')}`), ...(trust ? ['--trust', producerPub] : [])], { DOCKER_HOST: env.consumer });
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(msg);
    await expect(docker('consumer', 'image', 'inspect', tag)).rejects.toThrow();
  });
});
