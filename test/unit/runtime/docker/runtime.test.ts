import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { afterEach, describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../../../src/archive/index.js';
import { pull } from '../../../../src/consumer/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../../src/producer/index.js';
import { Repository } from '../../../../src/repo/index.js';
import { DockerClient, DockerRuntime, chainIds, type DockerApi } from '../../../../src/runtime/index.js';
import { MemoryTransport } from '../../../../src/transport/index.js';
import { SMALL, tempDir } from '../../../helpers.js';

// Docker's containerd image store, against answers recorded from the Engine API documentation and
// moby's source, since no Docker 25+ daemon installs here (Debian's docker.io is 20.10):
// - GET /info: DriverStatus [["driver-type", "io.containerd.snapshotter.v1"]] (docker info of the store)
// - POST /images/load: a JSON progress stream; from Docker 27.2 (moby v27.2.0 through v29.x,
//   daemon/containerd/image_exporter.go) an image that imported but failed to unpack is reported
//   as {"stream":"Error unpacking image NAME: ERR\n"} with status 200 (25.0-27.1 failed the call)
// - GET /images/{name}/json: Id is the manifest's digest (daemon/containerd/image.go); with
//   ?manifests=1 (API 1.48, Docker 28.0) `Manifests` lists each manifest's Available, Kind and
//   ImageData.Size.Unpacked (api/types/image/manifest.go)

const MANIFEST = 'sha256:' + 'ab'.repeat(32);

type Answers = {
  /** The lines of the load's progress stream, given the name it loaded. */
  load: (name: string) => object[];
  /** The Manifests field of an inspect with manifests=1; undefined: an API before 1.48. */
  manifests?: object[];
};

let server: Server | undefined;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

/** An Engine API on a unix socket that answers as Docker 28/29 on the containerd image store does. */
async function fakeEngine(answers: Answers): Promise<string> {
  const images = new Map<string, string[]>();
  const dir = await tempDir();
  const sock = join(dir, 'docker.sock');
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://d');
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/version') return json(200, { Version: '28.0.0', ApiVersion: '1.48', Os: 'linux', Arch: 'amd64' });
    if (url.pathname === '/info') return json(200, { Driver: 'overlayfs', DriverStatus: [['driver-type', 'io.containerd.snapshotter.v1']] });
    if (url.pathname === '/images/load') {
      const ex = tar.extract();
      const files = new Map<string, Buffer>();
      ex.on('entry', (h, s, next) => {
        const chunks: Buffer[] = [];
        s.on('data', (c: unknown) => { if (h.name.endsWith('.json')) chunks.push(c as Buffer); });
        s.on('end', () => (files.set(h.name, Buffer.concat(chunks)), next()));
      });
      ex.on('finish', () => {
        const m = JSON.parse(files.get('manifest.json')!.toString())[0] as { Config: string; RepoTags: string[]; Layers: string[] };
        const cfg = JSON.parse(files.get(m.Config)!.toString()) as { rootfs: { diff_ids: string[] } };
        for (const t of m.RepoTags) images.set(t, cfg.rootfs.diff_ids);
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(answers.load(m.RepoTags[0]!).map((l) => JSON.stringify(l) + '\r\n').join(''));
      });
      req.pipe(ex);
      return;
    }
    const m = /^\/images\/(.+)\/json$/.exec(url.pathname);
    if (m) {
      const name = decodeURIComponent(m[1]!);
      const layers = images.get(name);
      if (!layers) return json(404, { message: `No such image: ${name}` });
      return json(200, {
        Id: MANIFEST,
        RepoTags: [name],
        RootFS: { Type: 'layers', Layers: layers },
        Descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, size: 1234 },
        ...(url.searchParams.get('manifests') === '1' && answers.manifests ? { Manifests: answers.manifests } : {}),
      });
    }
    json(404, { message: 'page not found' });
  });
  await new Promise<void>((r) => server!.listen(sock, r));
  return `unix://${sock}`;
}

async function demoRepo(): Promise<Repository> {
  const repo = new Repository(new MemoryTransport());
  const [v1] = await writeDemoArchives(await tempDir(), undefined, SMALL);
  await publishArchive(repo, v1!, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag: '1' } });
  return repo;
}

const loaded = (name: string) => [{ stream: `Loaded image: ${name}\n` }];
const imageManifest = (available: boolean, unpacked: number) => ({
  ID: MANIFEST,
  Descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, size: 1234 },
  Available: available,
  Size: { Total: 4096 + unpacked, Content: 4096 },
  Kind: 'image',
  ImageData: { Platform: { architecture: 'amd64', os: 'linux' }, Containers: [], Size: { Unpacked: unpacked } },
});

describe('Docker, containerd image store (recorded answers of Docker 28.0 / API 1.48)', () => {
  it('a load that unpacked: every layer sent, the image ID is the manifest digest, the platform reported', async () => {
    const host = await fakeEngine({ load: loaded, manifests: [imageManifest(true, 8192)] });
    const events: { kind: string; platform?: string }[] = [];
    const r = await pull(await demoRepo(), new DockerRuntime(new DockerClient(host)), { subscriptions: [], stateDir: await tempDir(), onEvent: (e) => events.push(e) });
    expect(r.loaded).toEqual([{ ref: 'demo/app:1', version: 1, imageId: MANIFEST }]);
    expect(events.find((e) => e.kind === 'loading')).toMatchObject({ skipped: 0 });
    expect(events.find((e) => e.kind === 'loaded')).toMatchObject({ platform: 'linux/amd64' });
  });

  it('"Error unpacking image" in a load that answered 200 is a failed load (Docker 27.2+)', async () => {
    const host = await fakeEngine({ load: (n) => [...loaded(n), { stream: `Error unpacking image ${n}: failed to extract layer sha256:00: no space left on device\n` }], manifests: [imageManifest(true, 0)] });
    const r = await pull(await demoRepo(), new DockerRuntime(new DockerClient(host)), { subscriptions: [], stateDir: await tempDir(), throwOnRefused: false });
    expect(r.loaded).toEqual([]);
    expect(r.refused[0]!.code).toBe('DAEMON');
    expect(r.refused[0]!.message).toContain('imported the image but could not unpack it');
  });

  it('an image whose content is not all there is refused after the load (Available: false)', async () => {
    const host = await fakeEngine({ load: loaded, manifests: [imageManifest(false, 8192)] });
    const r = await pull(await demoRepo(), new DockerRuntime(new DockerClient(host)), { subscriptions: [], stateDir: await tempDir(), throwOnRefused: false });
    expect(r.refused[0]!.message).toContain('Available: false');
  });

  it('an image that is not unpacked is refused after the load (ImageData.Size.Unpacked 0)', async () => {
    const host = await fakeEngine({ load: loaded, manifests: [imageManifest(true, 0)] });
    const r = await pull(await demoRepo(), new DockerRuntime(new DockerClient(host)), { subscriptions: [], stateDir: await tempDir(), throwOnRefused: false });
    expect(r.refused[0]!.message).toContain('is not unpacked');
  });

  it('before API 1.48 (no Manifests) the layers from the config and the load stream decide', async () => {
    const host = await fakeEngine({ load: loaded });
    const r = await pull(await demoRepo(), new DockerRuntime(new DockerClient(host)), { subscriptions: [], stateDir: await tempDir() });
    expect(r.loaded.map((l) => l.imageId)).toEqual([MANIFEST]);
  });
});

describe('Docker, classic store: the plan of a thin load', () => {
  /** A daemon that holds exactly the chains of `held` (the layers of an image loaded before). */
  const holding = (held: string[]) =>
    new DockerRuntime({ endpoint: 'fake://d', imageStore: async () => 'graphdriver', layerChainIds: async () => new Set(chainIds(held)) } as unknown as DockerApi);
  const d = (c: string) => `sha256:${c.repeat(64)}`;
  const [B, E, A, N] = [d('b'), d('e'), d('a'), d('c')];

  it('leaves out the layers of the prefix the daemon has, and keeps every later one', async () => {
    const plan = await holding([B, E]).plan([B, E, N]);
    expect([...plan.omit].sort()).toEqual([B, E].sort());
  });

  it('keeps a layer of that prefix whose diff ID comes again in a new chain (an empty layer twice): its file is named by diff ID', async () => {
    // v1 [B, E, A, E] loaded; v2 adds E again: its fifth chain is new, and needs E's file
    const plan = await holding([B, E, A, E]).plan([B, E, A, E, E]);
    expect([...plan.omit].sort()).toEqual([A, B].sort());
  });
});

describe('a root file system imported', () => {
  /** A daemon whose import makes images of `made`'s platform, whatever is asked; the paths and platforms asked. */
  async function importingDaemon(made: { Os?: string; Architecture?: string; Variant?: string }): Promise<{ runtime: DockerRuntime; asked: string[] }> {
    const asked: string[] = [];
    const sock = join(await tempDir(), 'docker.sock');
    const id = `sha256:${'a'.repeat(64)}`;
    server = createServer((req, res) => {
      const url = new URL(req.url!, 'http://d');
      const path = decodeURIComponent(url.pathname).replace(/^\/v[\d.]+/, '');
      asked.push(`${req.method} ${path} ${url.searchParams.get('platform') ?? ''}`.trim());
      if (req.method === 'GET' && path === `/images/${id}/json`) return void res.setHeader('content-type', 'application/json').end(JSON.stringify({ Id: id, ...made }));
      req.resume().on('end', () => res.end(`{"status":"${id}"}\n`));
    });
    await new Promise<void>((r) => server!.listen(sock, r));
    return { runtime: new DockerRuntime(new DockerClient(`unix://${sock}`)), asked };
  }
  const rootfs = () => Readable.from([Buffer.from('rootfs')]);
  const name = { familiar: 'demo/root:1', qualified: 'docker.io/demo/root:1' };

  it('is made for the platform asked (POST /images/create?fromSrc=-&platform=…), and says what the image it made says', async () => {
    const { runtime, asked } = await importingDaemon({ Os: 'linux', Architecture: 'arm64', Variant: 'v8' });
    const made = await runtime.importRootfs(rootfs(), name, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(made).toEqual({ imageId: `sha256:${'a'.repeat(64)}`, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
    expect(asked).toEqual(['POST /images/create linux/arm64/v8', `GET /images/sha256:${'a'.repeat(64)}/json`]);
  });

  it('by a daemon that ignores the platform asked (Docker 20.10 without experimental features): says the platform it made', async () => {
    const { runtime } = await importingDaemon({ Os: 'linux', Architecture: 'amd64' });
    expect((await runtime.importRootfs(rootfs(), name, { os: 'linux', architecture: 'arm64' })).platform).toEqual({ os: 'linux', architecture: 'amd64' });
  });
});
