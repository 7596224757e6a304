import { createCipheriv, createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { encodeFileHeader, padding } from './tarheader.js';

// Small, deterministic `docker save` archives for `tarport demo` when no archive is given: two
// versions of one image that share their first two layers. They load; they carry no program to run.

function tarOf(files: [string, Buffer][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, data] of files) parts.push(encodeFileHeader(name, data.length), data, padding(data.length));
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/**
 * `size` bytes that do not compress, the same for the same seed: AES-256-CTR over zeros, keyed by the
 * seed's digest. (A chain of SHA-256 digests did the same 100 times slower: seconds for each demo, in
 * every test and every `tarport demo`.)
 */
function pseudoRandom(size: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

const hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function saveArchive(layers: Buffer[], repoTag: string, created: string): Buffer {
  const diffIds = layers.map((l) => `sha256:${hex(l)}`);
  const config = Buffer.from(
    JSON.stringify({
      architecture: process.arch === 'arm64' ? 'arm64' : 'amd64',
      os: 'linux',
      created,
      config: { Cmd: ['/hello.txt'], Labels: { 'org.opencontainers.image.title': 'tarport demo' } },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map((_, i) => ({ created, created_by: `tarport demo layer ${i + 1}` })),
    }),
  );
  const configName = `${hex(config)}.json`;
  const files: [string, Buffer][] = [[configName, config]];
  const paths = layers.map((l, i) => {
    const p = `${hex(Buffer.from(`${i}:${diffIds[i]}`))}/layer.tar`;
    files.push([p, l]);
    return p;
  });
  files.push(['manifest.json', Buffer.from(JSON.stringify([{ Config: configName, RepoTags: [repoTag], Layers: paths }]))]);
  return tarOf(files);
}

/**
 * Writes demo-v1.tar and demo-v2.tar into `dir`; returns their paths. `baseBytes`: the size of the
 * shared base layer's one file (tests that publish hundreds of times take a small one).
 */
export async function writeDemoArchives(dir: string, repoTag = 'tarport-demo/hello:latest', baseBytes = 4 << 20): Promise<string[]> {
  const base = tarOf([['base.bin', pseudoRandom(baseBytes, 'tarport demo base')]]);
  const app1 = tarOf([['hello.txt', Buffer.from('hello from tarport, version 1\n')]]);
  const app2 = tarOf([['news.txt', Buffer.from('version 2 adds this file and nothing else\n')]]);
  const v1 = saveArchive([base, app1], repoTag, '2026-01-01T00:00:00Z');
  const v2 = saveArchive([base, app1, app2], repoTag, '2026-01-02T00:00:00Z');
  const p1 = `${dir}/demo-v1.tar`;
  const p2 = `${dir}/demo-v2.tar`;
  await writeFile(p1, v1);
  await writeFile(p2, v2);
  return [p1, p2];
}
