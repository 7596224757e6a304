// src/consumer/pull.ts: which platform a release is loaded for, and what the load says it loaded.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { pull } from '../../../src/consumer/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { Repository } from '../../../src/repo/index.js';
import type { ExpectedImage, ImageName, LoadPlan, Platform, Removal, Runtime } from '../../../src/runtime/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { multiPlatform, tarBytes } from '../../corpus/tarwriter.js';
import { tempDir } from '../../helpers.js';

/** A runtime on `own` (what it reports, as it spells it) that counts its loads and keeps the images by name. */
class CountingRuntime implements Runtime {
  readonly kind = 'docker' as const;
  readonly endpoint = 'fake://runtime';
  loads = 0;
  private readonly images = new Map<string, string>();
  constructor(public own: Platform) {}
  async platform(): Promise<Platform> {
    return this.own;
  }
  async plan(): Promise<LoadPlan> {
    return { format: 'docker-save', omit: new Set(), thin: false, qualifiedNames: false };
  }
  async load(archive: Readable): Promise<void> {
    for await (const _ of archive); // the whole archive, as a daemon reads it
    this.loads++;
  }
  async importRootfs(): Promise<string> {
    throw new Error('not used');
  }
  async imageId(name: ImageName): Promise<string | undefined> {
    return this.images.get(name.familiar);
  }
  async verify(expected: ExpectedImage): Promise<string> {
    this.images.set(expected.name.familiar, expected.configDigest);
    return expected.configDigest;
  }
  async removeImage(): Promise<Removal> {
    return { removed: false };
  }
}

/** A repository holding demo/multi:1, a release of linux/amd64 and linux/arm64/v8. */
async function multiRepo(): Promise<{ repo: Repository; arm64: string }> {
  const mp = multiPlatform({ shape: 'nested', ref: 'demo/multi:1' });
  const archive = join(await tempDir(), 'multi.tar');
  await writeFile(archive, tarBytes(mp.items));
  const repo = new Repository(new MemoryTransport());
  await publishArchive(repo, archive, { create: true, compression: 'gzip', catalogTtlMs: DEFAULT_CATALOG_TTL_MS });
  return { repo, arm64: mp.arm64.config };
}

const linux = (architecture: string, variant?: string): Platform => ({ os: 'linux', architecture, ...(variant ? { variant } : {}) });

describe('the platform a multi-platform release was loaded for', () => {
  it('--platform linux/arm64/v8 after a load for the runtime\'s linux/arm64 is the same platform: up to date, not loaded again', async () => {
    const { repo, arm64 } = await multiRepo();
    const rt = new CountingRuntime(linux('arm64'));
    const stateDir = await tempDir();
    expect((await pull(repo, rt, { subscriptions: [], stateDir })).loaded.map((l) => l.imageId)).toEqual([arm64]);
    const again = await pull(repo, rt, { subscriptions: [], stateDir, platform: linux('arm64', 'v8') });
    expect([again.upToDate, again.loaded, rt.loads]).toEqual([['demo/multi:1'], [], 1]);
  });

  it('a runtime that reports its variant one run and not the next (arm64/v8, then aarch64) loads once', async () => {
    const { repo } = await multiRepo();
    const rt = new CountingRuntime(linux('arm64', 'v8'));
    const stateDir = await tempDir();
    await pull(repo, rt, { subscriptions: [], stateDir });
    rt.own = linux('aarch64');
    expect((await pull(repo, rt, { subscriptions: [], stateDir })).upToDate).toEqual(['demo/multi:1']);
    expect(rt.loads).toBe(1);
  });

  it('another platform is still another: linux/amd64 after linux/arm64 loads again', async () => {
    const { repo } = await multiRepo();
    const rt = new CountingRuntime(linux('arm64'));
    const stateDir = await tempDir();
    await pull(repo, rt, { subscriptions: [], stateDir });
    expect((await pull(repo, rt, { subscriptions: [], stateDir, platform: linux('amd64') })).loaded.map((l) => l.ref)).toEqual(['demo/multi:1']);
    expect(rt.loads).toBe(2);
  });
});

