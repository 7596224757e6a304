import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tar from 'tar-stream';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { Repository, checkRepository } from '../../../src/repo/index.js';
import { MemoryTransport, type Transport } from '../../../src/transport/index.js';
import { tempDir } from '../../helpers.js';

let archives: Promise<string[]> | undefined;

/**
 * Two small docker save archives (v1, v2 of one image; they share their base layer, v2 adds one),
 * shaped as writeDemoArchives makes them but with a 64 KiB base layer instead of 4 MiB: the
 * many-offset tests publish, gc and check them hundreds of times, and what they race over is the
 * order of the repository's changes, not the bytes hashed in between.
 */
export function demoArchives(): Promise<string[]> {
  archives ??= tempDir('tarport-repo-test-').then(writeSmallArchives);
  return archives;
}

async function writeSmallArchives(dir: string): Promise<string[]> {
  const base = await tarOf([['base.bin', randomBytes(64 << 10)]]);
  const app1 = await tarOf([['hello.txt', Buffer.from('hello from tarport, version 1\n')]]);
  const app2 = await tarOf([['news.txt', Buffer.from('version 2 adds this file and nothing else\n')]]);
  const paths = [join(dir, 'demo-v1.tar'), join(dir, 'demo-v2.tar')];
  await writeFile(paths[0]!, await saveArchive([base, app1], '2026-01-01T00:00:00Z'));
  await writeFile(paths[1]!, await saveArchive([base, app1, app2], '2026-01-02T00:00:00Z'));
  return paths;
}

const hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function tarOf(files: [string, Buffer][]): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, data] of files) pack.entry({ name, mtime: new Date(0) }, data);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A `docker save` archive of one image: config, layers, manifest.json. */
async function saveArchive(layers: Buffer[], created: string): Promise<Buffer> {
  const diffIds = layers.map((l) => `sha256:${hex(l)}`);
  const config = Buffer.from(
    JSON.stringify({
      architecture: process.arch === 'arm64' ? 'arm64' : 'amd64',
      os: 'linux',
      created,
      config: { Cmd: ['/hello.txt'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map((_, i) => ({ created, created_by: `layer ${i + 1}` })),
    }),
  );
  const configName = `${hex(config)}.json`;
  const layerPaths = layers.map((l, i) => `${hex(Buffer.from(`${i}:${diffIds[i]}`))}/layer.tar`);
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: ['demo/app:latest'], Layers: layerPaths }]));
  return tarOf([[configName, config], ...layers.map((l, i): [string, Buffer] => [layerPaths[i]!, l]), ['manifest.json', manifest]]);
}

export async function publish(t: Transport, which: 0 | 1, tag: string, name = 'demo/app'): Promise<void> {
  const a = (await demoArchives())[which]!;
  await publishArchive(new Repository(t), a, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name, tag } });
}

/** The faults `check` finds, as "what: problem" lines (an empty list: clean). */
export async function faults(t: Transport): Promise<string[]> {
  const r = await checkRepository(new Repository(t));
  return r.faults.map((f) => `${f.what}: ${f.problem}`);
}

/**
 * A repository built once per file and handed out as fresh copies: the many-offset tests start from
 * the same state each round, without publishing it again each round.
 */
export function copies(build: () => Promise<MemoryTransport>): () => Promise<MemoryTransport> {
  let template: Promise<MemoryTransport> | undefined;
  return async () => {
    const t = await (template ??= build());
    const copy = new MemoryTransport(t.location.replace(/^memory:\/\//, ''));
    for (const [k, v] of t.files) copy.files.set(k, Buffer.from(v));
    return copy;
  };
}
