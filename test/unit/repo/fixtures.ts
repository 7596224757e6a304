import { existsSync } from 'node:fs';
import { writeDemoArchives } from '../../../src/archive/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { Repository, checkRepository } from '../../../src/repo/index.js';
import { MemoryTransport, type Transport } from '../../../src/transport/index.js';
import { tempDir } from '../../helpers.js';

let archives: { dirs: string[]; made: Promise<string[]> } | undefined;

/**
 * Two small docker save archives (v1, v2 of one image; they share their base layer, v2 adds one):
 * writeDemoArchives' with a 64 KiB base layer instead of 4 MiB: the
 * many-offset tests publish, gc and check them hundreds of times, and what they race over is the
 * order of the repository's changes, not the bytes hashed in between.
 */
export function demoArchives(): Promise<string[]> {
  // this module stays loaded from one test file to the next (the unit project's workers keep their
  // modules), while each file's temp folders go when it ends: made again once they are gone
  if (!archives || (archives.dirs.length > 0 && !existsSync(archives.dirs[0]!))) {
    const dirs: string[] = [];
    archives = { dirs, made: tempDir('tarport-repo-test-').then((d) => (dirs.push(d), writeDemoArchives(d, 'demo/app:latest', 64 << 10))) };
  }
  return archives.made;
}

export async function publish(t: Transport, which: 0 | 1, tag: string, name = 'demo/app'): Promise<void> {
  const a = (await demoArchives())[which]!;
  await publishArchive(new Repository(t), a, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name, tag } });
}

/** The faults `check` finds, as "what: problem" lines (an empty list: clean). */
export async function faults(t: Transport): Promise<string[]> {
  // a publish killed mid-way leaves its intent: its lag is a fault at once here, not after a wait
  const r = await checkRepository(new Repository(t), { lagWaitMs: 0 });
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
