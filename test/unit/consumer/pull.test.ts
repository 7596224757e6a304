// src/consumer/pull.ts: which platform a release is loaded for, and what the load says it loaded.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { pull, type PullEvent } from '../../../src/consumer/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { Repository } from '../../../src/repo/index.js';
import type { ExpectedImage, ImageName, ImportedRootfs, LoadPlan, Platform, Removal, Runtime } from '../../../src/runtime/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { dockerSave, multiPlatform, tarBytes } from '../../corpus/tarwriter.js';
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
  /** The platform each import was asked for. */
  readonly imports: Platform[] = [];
  /** Podman's compatible import: the variant asked for is not kept. */
  dropsVariant = false;
  /** Docker 20.10 without its experimental features: every import is made for the runtime's own platform. */
  ignoresPlatform = false;
  async importRootfs(rootfs: Readable, name: ImageName, platform: Platform): Promise<ImportedRootfs> {
    for await (const _ of rootfs);
    this.imports.push(platform);
    const imageId = `sha256:${'e'.repeat(64)}`;
    this.images.set(name.familiar, imageId);
    if (this.ignoresPlatform) return { imageId, platform: this.own };
    const asked = { os: platform.os, architecture: platform.architecture };
    return this.dropsVariant ? { imageId, platform: asked, asked } : { imageId, platform };
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


/** A repository holding demo/root:1, a root file system release (its record names no platform). */
async function rootfsRepo(): Promise<Repository> {
  const archive = join(await tempDir(), 'rootfs.tar');
  await writeFile(archive, tarBytes([{ name: 'bin/app', data: Buffer.from('#!/bin/sh\n') }]));
  const repo = new Repository(new MemoryTransport());
  await publishArchive(repo, archive, { create: true, compression: 'gzip', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/root', tag: '1' } });
  return repo;
}

describe('the platform a root file system was imported for', () => {
  it('another --platform imports it again (its image is made for the platform asked); the same one, however spelled, does not', async () => {
    const repo = await rootfsRepo();
    const rt = new CountingRuntime(linux('amd64'));
    const stateDir = await tempDir();
    await pull(repo, rt, { subscriptions: [], stateDir, platform: linux('arm64') });
    await pull(repo, rt, { subscriptions: [], stateDir, platform: linux('aarch64', 'v8') });
    await pull(repo, rt, { subscriptions: [], stateDir, platform: linux('amd64') });
    expect(rt.imports).toEqual([linux('arm64'), linux('amd64')]);
  });
});

/** The platform the `loaded` event and the acknowledgement name, pulling `archive` (published as demo/x:1) on `rt`; `warned` gets the warnings. */
async function loadedAs(items: Parameters<typeof tarBytes>[0], rt: CountingRuntime, platform?: Platform, warned: string[] = []): Promise<string[]> {
  const archive = join(await tempDir(), 'x.tar');
  await writeFile(archive, tarBytes(items));
  const t = new MemoryTransport();
  const repo = new Repository(t);
  await publishArchive(repo, archive, { create: true, compression: 'gzip', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/x', tag: '1' } });
  const events: PullEvent[] = [];
  await pull(repo, rt, { subscriptions: [], stateDir: await tempDir(), onEvent: (e) => events.push(e), ...(platform ? { platform } : {}), ack: { id: 'host-1', hostname: 'edge-1', timeoutMs: 5_000 } });
  warned.push(...events.flatMap((e) => (e.kind === 'warning' ? [e.message] : [])));
  const ack = JSON.parse(t.files.get('tarport/acks/host-1.json')!.toString()) as { releases: { platform: string }[] };
  return [...events.flatMap((e) => (e.kind === 'loaded' ? [e.platform] : [])), ...ack.releases.map((l) => l.platform)];
}

describe('the platform a load says it loaded', () => {
  it('a single-platform image: the platform its config names, not a --platform it does not have', async () => {
    expect(await loadedAs(dockerSave('demo/x:1').items, new CountingRuntime(linux('amd64')), linux('arm64'))).toEqual(['linux/amd64', 'linux/amd64']);
  });

  it('a multi-platform release: the platform of the image picked, as its config names it', async () => {
    const mp = multiPlatform({ shape: 'nested', ref: 'demo/x:1' });
    expect(await loadedAs(mp.items, new CountingRuntime(linux('amd64')), linux('aarch64'))).toEqual(['linux/arm64/v8', 'linux/arm64/v8']);
  });

  it('a root file system (its record names no platform) is imported for --platform, and says so', async () => {
    const rt = new CountingRuntime(linux('amd64'));
    expect(await loadedAs([{ name: 'bin/app', data: Buffer.from('#!/bin/sh\n') }], rt, linux('arm64', 'v8'))).toEqual(['linux/arm64/v8', 'linux/arm64/v8']);
    expect(rt.imports).toEqual([linux('arm64', 'v8')]);
  });

  it("a root file system without --platform is imported for the runtime's platform", async () => {
    const rt = new CountingRuntime(linux('arm', 'v7'));
    expect(await loadedAs([{ name: 'bin/app', data: Buffer.from('#!/bin/sh\n') }], rt)).toEqual(['linux/arm/v7', 'linux/arm/v7']);
    expect(rt.imports).toEqual([linux('arm', 'v7')]);
  });

  it('a root file system the runtime made for its own platform, not the one asked (Docker 20.10): a warning names both, the load says what it made, and the next run does not import it again', async () => {
    const repo = await rootfsRepo();
    const rt = new CountingRuntime(linux('amd64'));
    rt.ignoresPlatform = true;
    const stateDir = await tempDir();
    const events: PullEvent[] = [];
    await pull(repo, rt, { subscriptions: [], stateDir, platform: linux('arm64'), onEvent: (e) => events.push(e) });
    await pull(repo, rt, { subscriptions: [], stateDir, platform: linux('arm64'), onEvent: (e) => events.push(e) });
    expect(events.flatMap((e) => (e.kind === 'warning' ? [e.message] : []))).toEqual([
      "demo/root:1 v1: the docker runtime made the root file system an image for linux/amd64, not for the linux/arm64 asked (it ignored the platform: Docker 20.10 takes it only with its experimental features on); it is loaded as that",
    ]);
    expect(events.flatMap((e) => (e.kind === 'loaded' ? [e.platform] : []))).toEqual(['linux/amd64']);
    expect(rt.imports).toEqual([linux('arm64')]);
  });

  it('a root file system: what the runtime made of it, when it drops the variant asked for (Podman), without a warning: it made what it was asked', async () => {
    const rt = new CountingRuntime(linux('amd64'));
    rt.dropsVariant = true;
    const warned: string[] = [];
    expect(await loadedAs([{ name: 'bin/app', data: Buffer.from('#!/bin/sh\n') }], rt, linux('arm', 'v6'), warned)).toEqual(['linux/arm', 'linux/arm']);
    expect(warned).toEqual([]);
  });
});
