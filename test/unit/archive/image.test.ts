import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { TarArchive, readArchiveContent, type ArchiveContent, type IndexMember } from '../../../src/archive/index.js';
import { dockerSave, multiPlatform, sha, tarBytes, type Item } from '../../corpus/tarwriter.js';
import { tempDir } from '../../helpers.js';

async function openOf(items: Item[]): Promise<TarArchive> {
  const p = join(await tempDir(), 'a.tar');
  await writeFile(p, tarBytes(items));
  return TarArchive.open(p);
}

async function contentOf(items: Item[]): Promise<ArchiveContent> {
  return readArchiveContent(await openOf(items));
}

/** The archive entries `readArchiveContent` read, with how often each. */
async function readsOf(items: Item[]): Promise<{ content: ArchiveContent; reads: Map<string, number> }> {
  const tar = await openOf(items);
  const spy = vi.spyOn(tar, 'readEntry');
  const content = await readArchiveContent(tar);
  const reads = new Map<string, number>();
  for (const [name] of spy.mock.calls) reads.set(name, (reads.get(name) ?? 0) + 1);
  return { content, reads };
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';
const LINUX = { os: 'linux', architecture: 'amd64' };

/** The blobs of an OCI layout, stored by content; `items` adds oci-layout and index.json. */
class Layout {
  readonly blobs = new Map<string, Buffer>();

  put(v: Buffer | object, mediaType?: string): { mediaType?: string; digest: string; size: number } {
    const bytes = Buffer.isBuffer(v) ? v : json(v);
    this.blobs.set(sha(bytes), bytes);
    return { ...(mediaType ? { mediaType } : {}), digest: `sha256:${sha(bytes)}`, size: bytes.length };
  }

  /** An image manifest of one layer, its JSON changed by `edit` before it is stored. */
  image(edit: (m: Record<string, unknown>) => unknown = (m) => m): { mediaType?: string; digest: string; size: number } {
    const layer = tarBytes([{ name: 'hello.txt', data: Buffer.from('hello\n') }]);
    const config = this.put({ ...LINUX, rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] } }, 'application/vnd.oci.image.config.v1+json');
    return this.put(json(edit({ schemaVersion: 2, mediaType: MANIFEST, config, layers: [this.put(layer, 'application/vnd.oci.image.layer.v1.tar')] })), MANIFEST);
  }

  items(index: unknown, extra: readonly Item[] = []): Item[] {
    const blobs = [...this.blobs].map(([hex, data]): Item => ({ name: `blobs/sha256/${hex}`, data }));
    return [{ name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }, ...blobs, ...extra, { name: 'index.json', data: json(index) }];
  }
}

const named = { annotations: { 'org.opencontainers.image.ref.name': 'corpus/fan:1' } };

/**
 * Indexes over indexes: `levels` of them, each listing the next one `k` times, the last listing
 * one image manifest k times. `typed`: index.json says the top one is an index (read as one
 * multi-platform image); untyped, only its blob says so (read as the images of a layout).
 */
function fan(k: number, levels: number, typed: boolean): Item[] {
  const l = new Layout();
  let d = { ...l.image(), platform: LINUX };
  for (let i = 0; i < levels; i++) d = { ...l.put({ schemaVersion: 2, mediaType: INDEX, manifests: Array<unknown>(k).fill(d) }, INDEX), platform: LINUX };
  const { mediaType, digest, size } = d;
  return l.items({ schemaVersion: 2, manifests: [{ ...(typed ? { mediaType } : {}), digest, size, ...named }] });
}

const summary = (m: IndexMember) =>
  m.kind === 'image' ? `image ${[m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/')} ${m.image.configDigest}` : `${m.kind} ${m.descriptor.digest}`;

describe('--kind: what an archive is taken for', () => {
  // a root file system whose own files include /manifest.json (a web app's, say), as docker export writes it
  const rootfsWithManifest: Item[] = [{ name: 'manifest.json', data: json({ name: 'my web app', icons: [] }) }, { name: 'etc/hostname', data: Buffer.from('box\n') }];

  it('rootfs: an archive with a manifest.json of its own is a root file system; auto reads it as an image and refuses it, naming --kind rootfs', async () => {
    const tar = await openOf(rootfsWithManifest);
    expect(await readArchiveContent(tar, 'rootfs')).toEqual({ kind: 'rootfs' });
    await expect(readArchiveContent(tar)).rejects.toMatchObject({
      code: 'BAD_INPUT',
      message: `${tar.path}: manifest.json is not a list of images (a root file system that holds manifest.json of its own: publish it with --kind rootfs)`,
    });
  });

  it("auto: a docker save archive that is only broken (a layer missing) is refused without the advice, which would publish it as a root file system", async () => {
    const { items, layerPaths } = dockerSave();
    const tar = await openOf(items.filter((i) => i.name !== layerPaths[1]));
    const e = (await readArchiveContent(tar).catch((x: unknown) => x)) as Error;
    expect(e).toMatchObject({ code: 'BAD_INPUT' });
    expect(e.message).toContain(layerPaths[1]);
    expect(e.message).not.toContain('--kind');
  });

  it('image: an archive without an image\'s metadata files is refused, not published as a root file system', async () => {
    const tar = await openOf([{ name: 'etc/hostname', data: Buffer.from('box\n') }]);
    await expect(readArchiveContent(tar, 'image')).rejects.toMatchObject({
      code: 'BAD_INPUT',
      message: `${tar.path}: not an image archive (no manifest.json, no OCI index.json and oci-layout), and --kind image says it is one`,
    });
    expect(await readArchiveContent(tar, 'auto')).toEqual({ kind: 'rootfs' });
  });

  it('auto: a docker save archive of before Docker 1.10 (repositories, <id>/json and <id>/layer.tar, no manifest.json) is refused, not published as a root file system of nested tars; --kind rootfs takes it as one', async () => {
    const id = 'a'.repeat(64);
    const legacy: Item[] = [
      { name: 'repositories', data: json({ 'corpus/old': { '1': id } }) },
      { name: `${id}/VERSION`, data: Buffer.from('1.0') },
      { name: `${id}/json`, data: json({ id, os: 'linux' }) },
      { name: `${id}/layer.tar`, data: tarBytes([{ name: 'hello.txt', data: Buffer.from('hello\n') }]) },
    ];
    const tar = await openOf(legacy);
    await expect(readArchiveContent(tar)).rejects.toMatchObject({
      code: 'BAD_INPUT',
      message: `${tar.path}: an image archive as docker save wrote it before Docker 1.10 (repositories and <id>/layer.tar, no manifest.json), which tarport does not read: load it and save it again with a newer docker (docker load -i FILE, then docker save); a root file system that holds such files of its own: publish it with --kind rootfs`,
    });
    expect(await readArchiveContent(tar, 'rootfs')).toEqual({ kind: 'rootfs' });
    // a root file system with a file named repositories and nothing else of that layout is one
    expect(await readArchiveContent(await openOf([legacy[0]!, { name: 'etc/hostname', data: Buffer.from('box\n') }]))).toEqual({ kind: 'rootfs' });
  });
});

describe('image indexes: one multi-platform image per index', () => {
  it.each(['nested', 'flat'] as const)('a %s index is one index of two platform images and an attestation, not three images', async (shape) => {
    const mp = multiPlatform({ shape });
    const c = await contentOf(mp.items);
    if (c.kind !== 'images') throw new Error('expected images');
    expect(c.images).toEqual([]);
    expect(c.indexes).toHaveLength(1);
    expect(c.indexes[0]!.repoTags).toEqual(['corpus/multi:1']);
    expect(c.indexes[0]!.members.map(summary)).toEqual([`image linux/amd64 ${mp.amd64.config}`, `image linux/arm64/v8 ${mp.arm64.config}`, `artifact ${mp.attestation}`]);
  });

  it('a platform whose manifest the archive lacks is recorded as absent, not an error', async () => {
    const c = await contentOf(multiPlatform({ shape: 'nested', absent: true }).items);
    if (c.kind !== 'images') throw new Error('expected images');
    const absent = c.indexes[0]!.members.filter((m) => m.kind === 'absent');
    expect(absent).toHaveLength(1);
    expect(absent[0]!.descriptor.platform).toEqual({ os: 'linux', architecture: 's390x' });
    expect(absent[0]!.kind === 'absent' && absent[0]!.missing).toMatch(/^its manifest sha256:/);
  });

  it('a platform whose config blob is missing is absent too; the others stay images', async () => {
    const mp = multiPlatform({ shape: 'nested' });
    const items = mp.items.filter((i) => i.name !== `blobs/sha256/${mp.arm64.config.slice(7)}`);
    const c = await contentOf(items);
    if (c.kind !== 'images') throw new Error('expected images');
    expect(c.indexes[0]!.members.map((m) => m.kind)).toEqual(['image', 'absent', 'artifact']);
    const arm = c.indexes[0]!.members[1]!;
    expect(arm.kind === 'absent' && arm.missing).toBe(`its config ${mp.arm64.config}`);
  });

  it('an index member with a platform that is not a short name is refused, naming the descriptor', async () => {
    const mp = multiPlatform({ shape: 'flat' });
    const items = mp.items.map((i) => (i.name === 'index.json' ? { ...i, data: Buffer.from(i.data!.toString().replace('"s390x"', '"x"').replace('"arm64"', '"arm\\u001b[31m"')) } : i));
    await expect(contentOf(items)).rejects.toThrow(/index\.json\.manifests\[1\]: invalid platform/);
  });
});

describe('nested indexes: each blob read once, loops and endless fans refused', () => {
  it.each([
    ['a multi-platform image', true],
    ['the images of a layout', false],
  ])('four indexes each listing the next ten times (%s) are refused, not walked ten thousand times', async (_what, typed) => {
    const t0 = Date.now();
    await expect(contentOf(fan(10, 4, typed))).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/more than 10000 descriptors/) });
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it.each([
    ['a multi-platform image', true],
    ['the images of a layout', false],
  ])('an index listed many times is read and parsed once (%s)', async (_what, typed) => {
    const { content, reads } = await readsOf(fan(3, 4, typed));
    expect(content.kind).toBe('images');
    const blobs = [...reads].filter(([name]) => name.startsWith('blobs/'));
    expect(blobs.length).toBe(6); // four indexes, the manifest, the config
    expect(blobs.filter(([, n]) => n !== 1)).toEqual([]);
  });

  it.each([
    ['a multi-platform image', true],
    ['the images of a layout', false],
  ])('an index that lists itself through a symbolic link is refused as a loop (%s)', async (_what, typed) => {
    const hex = sha(Buffer.from('the loop'));
    let loop = Buffer.alloc(0);
    for (let size = 0; loop.length !== size || size === 0; ) {
      size = loop.length || 100;
      loop = json({ schemaVersion: 2, mediaType: INDEX, manifests: [{ mediaType: INDEX, digest: `sha256:${hex}`, size }] });
    }
    const items = new Layout().items(
      { schemaVersion: 2, manifests: [{ ...(typed ? { mediaType: INDEX } : {}), digest: `sha256:${hex}`, size: loop.length, ...named }] },
      [{ name: 'loop.json', data: loop }, { name: `blobs/sha256/${hex}`, type: '2', linkname: '../../loop.json' }],
    );
    await expect(contentOf(items)).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(new RegExp(`index sha256:${hex} again .*: a loop`)) });
  });
});

describe("an OCI layout that lists one manifest more than once (skopeo's oci:DIR:REF, one entry per copy)", () => {
  it('is one image with every name given to it; an entry under a bare tag (no name) takes nothing from it', async () => {
    const l = new Layout();
    const app = l.image();
    const other = l.image((m) => ({ ...m, annotations: { other: 'yes' } }));
    const ref = (name: string) => ({ annotations: { 'org.opencontainers.image.ref.name': name } });
    const content = await contentOf(l.items({ schemaVersion: 2, manifests: [{ ...app, ...ref('corpus/app:b') }, { ...app, ...ref('justtag') }, { ...other, ...ref('corpus/other:a') }, { ...app, ...ref('corpus/app:c') }] }));
    expect(content.kind === 'images' && content.images.map((i) => i.repoTags)).toEqual([['corpus/app:b', 'corpus/app:c'], ['corpus/other:a']]);
  });

  it('with no name on any of its entries, is one image without a name (publish asks for --name)', async () => {
    const l = new Layout();
    const app = l.image();
    const bare = { annotations: { 'org.opencontainers.image.ref.name': 'justtag' } };
    const content = await contentOf(l.items({ schemaVersion: 2, manifests: [{ ...app, ...bare }, { ...app, ...bare }] }));
    expect(content.kind === 'images' && content.images.map((i) => i.repoTags)).toEqual([[]]);
  });
});

describe('manifest.json: each config read once, a bounded number of images', () => {
  /** A docker save archive whose manifest.json lists one image (no layers, a config of `pad` bytes) `n` times. */
  function repeated(n: number, pad: number): Item[] {
    const config = json({ ...LINUX, padding: 'x'.repeat(pad), rootfs: { type: 'layers', diff_ids: [] } });
    const name = `${sha(config)}.json`;
    return [{ name, data: config }, { name: 'manifest.json', data: json(Array<unknown>(n).fill({ Config: name, RepoTags: ['corpus/same:1'], Layers: [] })) }];
  }

  it('an image listed a thousand times shares one config, read once', async () => {
    const items = repeated(1000, 1 << 20);
    const { content, reads } = await readsOf(items);
    expect(content.kind === 'images' && content.images.length).toBe(1000);
    expect(content.kind === 'images' && new Set(content.images.map((im) => im.config)).size).toBe(1);
    expect(reads.get(items[0]!.name)).toBe(1);
  });

  it('more than 4096 images in manifest.json are refused', async () => {
    await expect(contentOf(repeated(4097, 10))).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/manifest\.json lists 4097 images, more than the 4096 accepted/) });
  });
});

describe('Docker 25.0.0/25.0.1 `docker save <ID>`: index.json without a manifests list (moby#47210)', () => {
  const withIndex = (index: unknown): Item[] => [...dockerSave().items, { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }, { name: 'index.json', data: json(index) }];

  it.each([
    ['null', { schemaVersion: 2, mediaType: INDEX, manifests: null }],
    ['missing', { schemaVersion: 2, mediaType: INDEX }],
  ])('a %s manifests list beside manifest.json: the images of manifest.json', async (_what, index) => {
    const c = await contentOf(withIndex(index));
    expect(c.kind === 'images' && c.images.map((im) => [im.format, im.repoTags, im.layers.length])).toEqual([['docker-save-oci', ['corpus/app:1'], 2]]);
  });

  it('an OCI layout without manifest.json must still list its manifests', async () => {
    await expect(contentOf(new Layout().items({ schemaVersion: 2, manifests: null }))).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/index\.json has no manifests list/) });
  });
});

describe('malformed metadata is bad input naming the entry, never a TypeError', () => {
  const docker25 = (l: Layout, manifest: object): Item[] => [...dockerSave().items, ...l.items({ schemaVersion: 2, manifests: [manifest] })];
  const blobOf = (d: { digest: string }) => `blobs/sha256/${d.digest.slice(7)}`;
  const cases: [string, () => [Item[], RegExp | string]][] = [
    ['manifest.json [null]', () => [[{ name: 'manifest.json', data: json([null]) }], /manifest\.json\[0\] is not an object/]],
    [
      'an OCI manifest blob that is null',
      () => {
        const l = new Layout();
        const d = l.put(Buffer.from('null'), MANIFEST);
        return [l.items({ schemaVersion: 2, manifests: [d] }), `${blobOf(d)} is not a JSON object`];
      },
    ],
    [
      'a descriptor whose mediaType is a number',
      () => {
        const l = new Layout();
        return [l.items({ schemaVersion: 2, manifests: [{ ...l.image(), mediaType: 5 }] }), /index\.json\.manifests\[0\]: mediaType 5 is not a string/];
      },
    ],
    [
      'layers [null] in a layout',
      () => {
        const l = new Layout();
        const d = l.image((m) => ({ ...m, layers: [null] }));
        return [l.items({ schemaVersion: 2, manifests: [d] }), `${blobOf(d)}: layers[0] is not a descriptor`];
      },
    ],
    [
      'layers [null] in an image index',
      () => {
        const l = new Layout();
        const d = { ...l.image((m) => ({ ...m, layers: [null] })), platform: LINUX };
        const ix = l.put({ schemaVersion: 2, mediaType: INDEX, manifests: [d] }, INDEX);
        return [l.items({ schemaVersion: 2, manifests: [{ ...ix, ...named }] }), `${blobOf(d)}: layers[0] is not a descriptor`];
      },
    ],
    [
      'layers [null] in a Docker 25 archive',
      () => {
        const l = new Layout();
        const d = l.image((m) => ({ ...m, layers: [null] }));
        return [docker25(l, d), `${blobOf(d)}: layers[0] is not a descriptor`];
      },
    ],
    [
      'layers {} in a Docker 25 archive',
      () => {
        const l = new Layout();
        const d = l.image((m) => ({ ...m, layers: {} }));
        return [docker25(l, d), `${blobOf(d)}: layers is not a list`];
      },
    ],
  ];

  it.each(cases)('%s', async (_what, make) => {
    const [items, message] = make();
    await expect(contentOf(items)).rejects.toMatchObject({ code: 'BAD_INPUT', message: typeof message === 'string' ? expect.stringContaining(message) : expect.stringMatching(message) });
  });
});
