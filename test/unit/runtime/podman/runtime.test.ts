// src/runtime/podman/runtime.ts: the load plan, the platform and loadVerified, alone and from a
// consumer's pull of a real release (the real Podman runs in test/integration/runtimes.test.ts).
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { createServer, get as httpGet, type IncomingMessage } from 'node:http';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { machine } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import type { TarportError } from '../../../../src/errors.js';
import { TarArchive, writeDemoArchives } from '../../../../src/archive/index.js';
import { pull } from '../../../../src/consumer/index.js';
import { generateKeyPair, loadDecryptionKey, loadRecipients } from '../../../../src/crypto/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../../src/producer/index.js';
import { Repository } from '../../../../src/repo/index.js';
import { PodmanRuntime, platformOfMachine, type DockerApi, type VerifiedLoad } from '../../../../src/runtime/index.js';
import { DaemonStuckError, RepositorySilentError } from '../../../../src/runtime/docker/client.js';
import { LibpodClient, type LibpodApi } from '../../../../src/runtime/podman/libpod.js';
import { servedImage } from '../../../../src/runtime/podman/runtime.js';
import { FileTransport, MemoryTransport } from '../../../../src/transport/index.js';
import { SMALL, tempDir } from '../../../helpers.js';

// no call may reach the API: plan and platform are answered without it
const api = new Proxy({ endpoint: 'unix:///nowhere/podman.sock' }, {
  get: (t, k) => (k === 'endpoint' ? t.endpoint : () => { throw new Error(`unexpected API call ${String(k)}`); }),
}) as unknown as DockerApi;

describe('Podman load plan and platform', () => {
  it('takes unencrypted layers uncompressed (OCI), every one of them, and docker save archives otherwise', async () => {
    const rt = new PodmanRuntime(api);
    const stored = await rt.planStored([{ diffId: `sha256:${'a'.repeat(64)}`, digest: `sha256:${'1'.repeat(64)}` }]);
    expect(stored).toEqual({ format: 'oci-layout', omit: new Set(), thin: false, qualifiedNames: true });
    expect((await rt.plan()).format).toBe('docker-save');
  });

  it("is the host's platform, without asking the API (Podman's GET /version is slow)", async () => {
    expect(await new PodmanRuntime(api).platform()).toEqual(platformOfMachine('linux', machine()));
  });
});

// loadVerified: Podman pulls from the loopback registry; a fake libpod pulls it over HTTP as Podman would
const blob = (bytes: Buffer, mediaType: string) => ({ digest: digestOf(bytes), size: bytes.length, mediaType, open: async () => Readable.from([bytes]) });
const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const config = Buffer.from('{"rootfs":{"type":"layers","diff_ids":[]}}');
const layerA = blob(Buffer.alloc(5000, 1), 'application/vnd.oci.image.layer.v1.tar+zstd');
const layerB = blob(Buffer.alloc(7000, 2), 'application/vnd.oci.image.layer.v1.tar+zstd');
const verified = { config, configDigest: digestOf(config), layers: [layerA, layerB, layerA] };
const name = { familiar: 'team/app:1', qualified: 'docker.io/team/app:1' };

interface PulledManifest {
  mediaType: string;
  config: { digest: string; size: number };
  layers: { mediaType: string; digest: string; size: number }[];
}

/**
 * A libpod API whose pull reads the manifest and every blob it names from the registry and checks
 * them (into `seen`: the manifest and each blob's bytes), except blobs it `has` (as Podman skips a
 * layer its store holds under that digest).
 */
function pullingLibpod(calls: string[], opts: { local?: boolean; pull?: (ref: string) => Promise<string>; has?: Set<string>; seen?: { manifest?: PulledManifest; blobs: Map<string, Buffer> } } = {}): LibpodApi {
  return {
    local: opts.local ?? true,
    pull: opts.pull ?? (async (ref) => {
      calls.push(`pull ${ref}`);
      const [host, rest] = [ref.slice(0, ref.indexOf('/')), ref.slice(ref.indexOf('/') + 1)];
      const [repo, tag] = rest.split(':') as [string, string];
      const manifest = Buffer.from(await (await fetch(`http://${host}/v2/${repo}/manifests/${tag}`)).arrayBuffer());
      const m = JSON.parse(manifest.toString()) as PulledManifest;
      if (opts.seen) opts.seen.manifest = m;
      for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
        if (opts.has?.has(d)) continue;
        const bytes = Buffer.from(await (await fetch(`http://${host}/v2/${repo}/blobs/${d}`)).arrayBuffer());
        if (digestOf(bytes) !== d) throw new Error(`blob ${d} does not match`);
        opts.seen?.blobs.set(d, bytes);
      }
      return m.config.digest;
    }),
    tag: async (id, repo, tag) => void calls.push(`tag ${id} ${repo}:${tag}`),
    untag: async (id, repo, tag) => void calls.push(`untag ${id} ${repo}:${tag}`),
  };
}

describe('Podman loadVerified: a pull from the loopback registry', () => {
  it('serves the manifest and each blob once to the pull, names the image and takes the registry name off', async () => {
    const calls: string[] = [];
    const got = await new PodmanRuntime(api, pullingLibpod(calls)).loadVerified(verified, name);
    expect(got.loaded).toBe(true);
    const r = got as Extract<VerifiedLoad, { loaded: true }>;
    expect(r.via).toBe(`pulled by Podman from tarport's loopback registry (0.0 MiB served: 2 of 2 layer(s), no upload)`);
    const served = servedImage(verified);
    expect(r.manifestDigest).toBe(served.manifest.digest);
    const [pull, tag, untag] = calls;
    const ref = /^pull (127\.0\.0\.1:\d+\/tarport-load-[0-9a-f]{32}):load$/.exec(pull!)![1]!;
    expect(tag).toBe(`tag ${verified.configDigest} docker.io/team/app:1`);
    expect(untag).toBe(`untag ${verified.configDigest} ${ref}:load`);
    expect(calls).toHaveLength(3);
  });

  it('a tag Podman refuses fails the load and still takes the registry name off: no name is left behind', async () => {
    const calls: string[] = [];
    const libpod = { ...pullingLibpod(calls), tag: async () => Promise.reject(new Error('tag failed (500): invalid reference format')) };
    await expect(new PodmanRuntime(api, libpod).loadVerified(verified, name)).rejects.toThrow('invalid reference format');
    expect(calls.map((c) => c.split(' ')[0])).toEqual(['pull', 'untag']);
    expect(calls[1]).toMatch(/^untag sha256:[0-9a-f]{64} 127\.0\.0\.1:\d+\/tarport-load-[0-9a-f]{32}:load$/);
  });

  it('has an OCI manifest naming the config and every layer in order, and serves a repeated layer once', () => {
    const served = servedImage(verified);
    const m = JSON.parse(served.manifest.bytes.toString()) as { mediaType: string; config: { digest: string; size: number }; layers: { digest: string }[] };
    expect(served.manifest.digest).toBe(digestOf(served.manifest.bytes));
    expect(m.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(m.config).toEqual({ mediaType: 'application/vnd.oci.image.config.v1+json', digest: verified.configDigest, size: config.length });
    expect(m.layers.map((l) => l.digest)).toEqual([layerA.digest, layerB.digest, layerA.digest]);
    expect(served.blobs.map((b) => b.digest)).toEqual([verified.configDigest, layerA.digest, layerB.digest]);
  });

  it('says how many layers the pull took, and that they went uncompressed', async () => {
    const plain = (bytes: Buffer) => blob(bytes, 'application/vnd.oci.image.layer.v1.tar');
    const [a, b] = [plain(Buffer.alloc(3 << 20, 3)), plain(Buffer.alloc(1 << 20, 4))];
    const calls: string[] = [];
    // Podman has the first layer already (found by its diff ID): it asks for the second only
    const got = await new PodmanRuntime(api, pullingLibpod(calls, { has: new Set([a.digest]) })).loadVerified({ ...verified, layers: [a, b] }, name);
    expect(got.loaded && got.via).toBe(`pulled by Podman from tarport's loopback registry (1.0 MiB served: 1 of 2 layer(s) uncompressed, no upload)`);
  });

  it('is not tried with a service that is not on a local socket', async () => {
    const calls: string[] = [];
    const r = await new PodmanRuntime(api, pullingLibpod(calls, { local: false })).loadVerified(verified, name);
    expect(r).toEqual({ loaded: false, reason: 'the Podman API service at unix:///nowhere/podman.sock is not a local socket: it cannot pull from this machine\'s loopback' });
    expect(calls).toEqual([]);
  });

  it('says why when the pull failed before it reached the registry, and names nothing', async () => {
    const calls: string[] = [];
    const pull = async () => Promise.reject(new Error('dial tcp: connect: network is unreachable'));
    const r = await new PodmanRuntime(api, pullingLibpod(calls, { pull })).loadVerified(verified, name);
    expect(r.loaded).toBe(false);
    expect(!r.loaded && r.reason).toMatch(/^Podman could not pull from tarport's loopback registry 127\.0\.0\.1:\d+ \(which it never reached\): dial tcp: connect: network is unreachable$/);
    expect(calls).toEqual([]);
  });

  it("throws tarport's own fault (a layer that could not be opened), not a reason to fall back", async () => {
    const broken = { ...verified, layers: [layerA, { ...layerB, open: async () => Promise.reject(new Error('object sha256:bbb failed its digest check')) }] };
    await expect(new PodmanRuntime(api, pullingLibpod([])).loadVerified(broken, name)).rejects.toThrow('object sha256:bbb failed its digest check');
  });
});

/**
 * The service's Docker-compatible side: the name Podman's tag gives the pulled image is what the
 * check after the load sees; an uploaded archive is kept (`loads`: its entries) and names its image.
 */
function compatApi(images: Map<string, string>, loads: string[][]): DockerApi {
  const load = async (archive: Readable) => {
    const file = join(await tempDir(), 'load.tar');
    await pipeline(archive, createWriteStream(file));
    const t = await TarArchive.open(file);
    loads.push([...t.entries.keys()]);
    const m = (JSON.parse((await t.readEntry('manifest.json')).toString()) as { Config: string; RepoTags: string[] }[])[0]!;
    for (const tag of m.RepoTags) images.set(tag, `sha256:${m.Config.replace(/^blobs\/sha256\/|\.json$/g, '')}`);
    return [];
  };
  return { endpoint: 'unix:///nowhere/podman.sock', inspectImage: async (ref: string) => (images.has(ref) ? { Id: images.get(ref)! } : undefined), load } as unknown as DockerApi;
}

describe('Podman loadVerified from a pull: what the loopback registry serves of a zstd release', () => {
  it('names each layer by its diff ID, with its uncompressed size and the plain tar media type, and serves those bytes', async () => {
    const repo = new Repository(new MemoryTransport());
    const [v1] = await writeDemoArchives(await tempDir(), undefined, 4 * SMALL);
    await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    const images = new Map<string, string>();
    const fakeApi = compatApi(images, []);
    const seen: { manifest?: PulledManifest; blobs: Map<string, Buffer> } = { blobs: new Map() };
    const libpod = pullingLibpod([], { seen });
    const tagging: LibpodApi = { ...libpod, tag: async (id, r, t) => void images.set(`${r}:${t}`, id) };
    const r = await pull(repo, new PodmanRuntime(fakeApi, tagging), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() });
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    const m = seen.manifest!;
    const config = JSON.parse(seen.blobs.get(m.config.digest)!.toString()) as { rootfs: { diff_ids: string[] } };
    expect(m.layers.map((l) => l.digest)).toEqual(config.rootfs.diff_ids);
    expect(m.layers.map((l) => l.mediaType)).toEqual(['application/vnd.oci.image.layer.v1.tar', 'application/vnd.oci.image.layer.v1.tar']);
    // each layer's size is the uncompressed tar's, and the bytes served are that tar (checked against the diff ID by the pull)
    expect(m.layers.map((l) => l.size)).toEqual(m.layers.map((l) => seen.blobs.get(l.digest)!.length));
    expect(m.layers[0]!.size).toBeGreaterThan(4 * SMALL);
  });

  it('an encrypted release is not served: it goes up as a docker save archive, and Podman is not asked to pull', async () => {
    const dir = await tempDir();
    const pair = await generateKeyPair('unit <u@example.invalid>', { type: 'ecc' });
    await writeFile(join(dir, 'pub'), pair.publicKey);
    await writeFile(join(dir, 'sec'), pair.privateKey);
    const repo = new Repository(new MemoryTransport());
    const [v1] = await writeDemoArchives(await tempDir(), undefined, 4 * SMALL);
    await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' }, encryptTo: await loadRecipients([join(dir, 'pub')]) });
    const calls: string[] = [];
    const loads: string[][] = [];
    const r = await pull(repo, new PodmanRuntime(compatApi(new Map(), loads), pullingLibpod(calls)), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir(), decryptKey: await loadDecryptionKey(join(dir, 'sec')) });
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    expect(calls).toEqual([]);
    expect(loads).toHaveLength(1);
    expect(loads[0]).toContain('manifest.json');
    expect(loads[0]).not.toContain('index.json');
  });
});

describe('Podman loadVerified from a local repository: each layer read in place, its digest checked on the way', () => {
  async function fileRepo(): Promise<{ dir: string; repo: Repository }> {
    const dir = await tempDir();
    const repo = new Repository(new FileTransport(dir));
    const [v1] = await writeDemoArchives(await tempDir(), undefined, 4 * SMALL);
    await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
    return { dir, repo };
  }
  /** The repository's object files, largest first (the layers before the config). */
  async function objects(dir: string): Promise<string[]> {
    const blobs = join(dir, 'blobs', 'sha256');
    const files = await Promise.all((await readdir(blobs)).map(async (f) => ({ f: join(blobs, f), size: (await stat(join(blobs, f))).size })));
    return files.sort((a, b) => b.size - a.size).map((x) => x.f);
  }

  it('serves every layer with no copy into the cache, and counts the objects it read', async () => {
    const { dir, repo } = await fileRepo();
    const images = new Map<string, string>();
    const libpod = pullingLibpod([]);
    const tagging: LibpodApi = { ...libpod, tag: async (id, r, t) => void images.set(`${r}:${t}`, id) };
    const state = await tempDir();
    const r = await pull(repo, new PodmanRuntime(compatApi(images, []), tagging), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: state });
    expect(r.loaded.map((l) => l.ref)).toEqual(['demo/app:1']);
    expect(images.get('docker.io/demo/app:1')).toBe(r.loaded[0]!.imageId);
    // the layers read in place and the config, each once, as the release record names them
    const records = (await readdir(join(dir, 'tarport', 'releases'), { recursive: true })).filter((f) => f.endsWith('.json'));
    const rec = JSON.parse(await readFile(join(dir, 'tarport', 'releases', records[0]!), 'utf8')) as { config: { size: number }; layers: { size: number }[] };
    expect(records).toHaveLength(1);
    expect(r.bytesFetched).toBe(rec.config.size + rec.layers.reduce((n, l) => n + l.size, 0));
    expect(await readdir(join(state, 'cache', 'blobs')).catch(() => [])).toEqual([]);
  });

  it('a layer object changed in the repository is refused (DIGEST_MISMATCH): Podman never gets the whole layer, and nothing is named', async () => {
    const { dir, repo } = await fileRepo();
    // its last byte (zstd's checksum of the frame): every byte of the layer decompresses as before
    const layer = (await objects(dir))[0]!;
    const bad = await readFile(layer);
    bad[bad.length - 1]! ^= 0xff;
    await writeFile(layer, bad);
    const calls: string[] = [];
    const images = new Map<string, string>();
    const err = await pull(repo, new PodmanRuntime(compatApi(images, []), pullingLibpod(calls)), { subscriptions: [{ name: 'demo/app', tag: '1' }], stateDir: await tempDir() }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect((err as Error).message).toContain(`object sha256:${layer.split('/').at(-1)}`);
    expect(calls.filter((c) => !c.startsWith('pull '))).toEqual([]);
    expect([...images.keys()]).toEqual([]);
  });
});

/**
 * A Podman API service on a unix socket whose pull reads the manifest and every layer from the
 * loopback registry as Podman does: to the end (`reads: 'all'`), or it takes the answer of the
 * first layer and reads none of it (`'none'`: a service stuck mid-pull). It never answers the pull
 * itself: the client's idle bound ends it.
 */
async function fakeService(reads: 'all' | 'none'): Promise<{ socket: string; close: () => Promise<void> }> {
  const socket = join(await tempDir(), 'podman.sock');
  const server = createServer((req) => {
    const ref = new URL(req.url!, 'http://x').searchParams.get('reference')!;
    const [host, rest] = [ref.slice(0, ref.indexOf('/')), ref.slice(ref.indexOf('/') + 1)];
    const repo = rest.split(':')[0]!;
    const get = (path: string) => new Promise<IncomingMessage>((resolve, reject) => httpGet(`http://${host}/v2/${repo}/${path}`, resolve).on('error', reject));
    void (async () => {
      const m = JSON.parse(await readBody(await get('manifests/load'))) as PulledManifest;
      for (const l of m.layers) {
        const res = await get(`blobs/${l.digest}`);
        if (reads === 'none') return void res.pause();
        await readBody(res);
      }
    })().catch(() => undefined); // the registry closes when the client gives up
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    socket: `unix://${socket}`,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

async function readBody(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

describe('Podman loadVerified: whose silence ends a pull', () => {
  it('a layer whose bytes stop coming from the repository is the repository silent (IO), not a stuck service, and no fallback', async () => {
    const service = await fakeService('all');
    // 64 KiB, then nothing: a download that stopped (a hung mount)
    const stalled = {
      ...layerB,
      size: 1 << 20,
      open: async () => {
        const r = new Readable({ read() {} });
        r.push(Buffer.alloc(64 << 10, 7));
        return r;
      },
    };
    try {
      const rt = new PodmanRuntime(api, new LibpodClient(service.socket, { idleMs: 300 }));
      const err = await rt.loadVerified({ ...verified, layers: [stalled] }, name).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RepositorySilentError);
      expect((err as TarportError).code).toBe('IO');
      expect((err as Error).message).toMatch(/^Podman's pull \(the API service at unix:\/\/.+\) from tarport's loopback registry: the layer it reads got no bytes from the repository for 300 ms; given up$/);
    } finally {
      await service.close();
    }
  }, 10_000);

  it('a service that stops reading the layer it asked for is stuck (DaemonStuckError)', async () => {
    const service = await fakeService('none');
    // more than the loopback socket's buffers take, in 1 MiB chunks: the registry's stream ends up
    // waiting on its socket in the middle of the blob
    const bytes = Buffer.alloc(32 << 20, 5);
    const big = { ...blob(bytes, 'application/vnd.oci.image.layer.v1.tar'), open: async () => Readable.from(Array.from({ length: 32 }, (_, i) => bytes.subarray(i << 20, (i + 1) << 20))) };
    try {
      const rt = new PodmanRuntime(api, new LibpodClient(service.socket, { idleMs: 300 }));
      const err = await rt.loadVerified({ ...verified, layers: [big] }, name).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DaemonStuckError);
      expect((err as Error).message).toMatch(/^Podman API service at unix:\/\/.+: POST \/v4\.0\.0\/libpod\/images\/pull sent and took nothing for 300 ms; given up \(is it stuck\? see its log\)$/);
    } finally {
      await service.close();
    }
  }, 10_000);
});

describe('Podman: a root file system imported', () => {
  it('is asked for the os and architecture of the platform (its compatible import keeps no variant), and says what it made, as the image it made says', async () => {
    const asked: (string | undefined)[] = [];
    const inspected: string[] = [];
    const id = `sha256:${'c'.repeat(64)}`;
    const compat = {
      import: async (_rootfs: Readable, _repo: string, _tag: string, _signal?: AbortSignal, platform?: string) => (asked.push(platform), id),
      // what the image says, not what was asked: here it kept the arm of linux/arm, and a variant of its own
      inspectImage: async (ref: string) => (inspected.push(ref), { Id: id, Os: 'linux', Architecture: 'arm', Variant: 'v7' }),
    } as unknown as DockerApi;
    const made = await new PodmanRuntime(compat).importRootfs(Readable.from([Buffer.from('rootfs')]), { familiar: 'demo/root:1', qualified: 'docker.io/demo/root:1' }, { os: 'linux', architecture: 'arm', variant: 'v6' });
    expect(made).toEqual({ imageId: id, platform: { os: 'linux', architecture: 'arm', variant: 'v7' }, asked: { os: 'linux', architecture: 'arm' } });
    expect(asked).toEqual(['linux/arm']);
    expect(inspected).toEqual([id]);
  });
});
