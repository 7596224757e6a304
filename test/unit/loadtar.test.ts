import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { describe, expect, it, vi } from 'vitest';
import { ociLayerMediaType, writeLoadArchive, writeOciLoadArchive } from '../../src/archive/index.js';

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function entries(stream: Readable, out: [string, Buffer][] = []): Promise<[string, Buffer][]> {
  const ex = tar.extract();
  const done = (async () => {
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      out.push([e.header.name, Buffer.concat(chunks)]);
    }
  })();
  await Promise.all([pipeline(stream, ex), done]);
  return out;
}

describe('OCI-layout load archive (containerd)', () => {
  const l1 = Buffer.from('layer one');
  const l2 = Buffer.from('layer two, new');
  const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [sha(l1), sha(l2)] } }));
  const spec = {
    configDigest: sha(config),
    config,
    imageName: 'docker.io/library/app:2',
    layers: [{ digest: sha(l1), size: l1.length }, { digest: sha(l2), size: l2.length }],
    // the runtime has layer one: only layer two is in the archive
    files: [{ name: `blobs/sha256/${sha(l2).slice(7)}`, size: l2.length, open: async () => Readable.from([l2]) }],
  };

  it('names every layer in its manifest, carries only the missing blobs, and ends with index.json', async () => {
    const { stream, manifestDigest } = writeOciLoadArchive(spec);
    const got = await entries(stream);
    expect(got.map(([n]) => n)).toEqual(['oci-layout', `blobs/sha256/${spec.configDigest.slice(7)}`, `blobs/sha256/${manifestDigest.slice(7)}`, `blobs/sha256/${sha(l2).slice(7)}`, 'index.json']);
    const files = new Map(got);
    const manifest = files.get(`blobs/sha256/${manifestDigest.slice(7)}`)!;
    expect(sha(manifest)).toBe(manifestDigest);
    expect(JSON.parse(manifest.toString()).layers.map((l: { digest: string }) => l.digest)).toEqual([sha(l1), sha(l2)]);
    const index = JSON.parse(files.get('index.json')!.toString());
    expect(index.manifests[0].annotations['io.containerd.image.name']).toBe('docker.io/library/app:2');
    expect(index.manifests[0].digest).toBe(manifestDigest);
  });

  it('names layers as stored (compressed) by their stored digest and media type', async () => {
    const z = Buffer.from('zstd frame');
    const storedSpec = { ...spec, layers: [{ digest: sha(l1), size: l1.length }, { digest: sha(z), size: z.length, mediaType: ociLayerMediaType('zstd') }], files: [{ name: `blobs/sha256/${sha(z).slice(7)}`, size: z.length, open: async () => Readable.from([z]) }] };
    const { stream, manifestDigest } = writeOciLoadArchive(storedSpec);
    const files = new Map(await entries(stream));
    const manifest = JSON.parse(files.get(`blobs/sha256/${manifestDigest.slice(7)}`)!.toString()) as { layers: { mediaType: string; digest: string; size: number }[] };
    expect(manifest.layers).toEqual([
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(l1), size: l1.length },
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: sha(z), size: z.length },
    ]);
    expect(files.get(`blobs/sha256/${sha(z).slice(7)}`)).toEqual(z);
    expect([ociLayerMediaType('none'), ociLayerMediaType('gzip')]).toEqual(['application/vnd.oci.image.layer.v1.tar', 'application/vnd.oci.image.layer.v1.tar+gzip']);
  });

  it('a layer shorter than declared fails the stream before index.json', async () => {
    const bad = { ...spec, files: [{ ...spec.files[0]!, open: async () => Readable.from([l2.subarray(0, 3)]) }] };
    const seen: [string, Buffer][] = [];
    await expect(entries(writeOciLoadArchive(bad).stream, seen)).rejects.toThrow(/3 bytes, expected 14/);
    expect(seen.map(([n]) => n)).not.toContain('index.json');
  });

  it('a layer that fails before the runtime reads the archive fails the stream for the reader that comes later, and throws nothing meanwhile', async () => {
    const fault = new Error('object sha256:1234 in memory://test: digest mismatch');
    const bad = { ...spec, files: [{ ...spec.files[0]!, open: async () => Readable.from((async function* () { throw fault; })()) }] };
    const { stream } = writeOciLoadArchive(bad);
    // with no reader yet, an 'error' without a listener is thrown from emit (and would end the agent)
    const emitted = vi.spyOn(stream, 'emit');
    for (let i = 0; i < 20 && !stream.destroyed; i++) await new Promise((r) => setImmediate(r));
    expect(stream.destroyed).toBe(true);
    expect(emitted.mock.calls.map(([ev]) => ev)).toContain('error');
    expect(emitted.mock.results.filter((r) => r.type === 'throw')).toEqual([]);
    await expect(entries(stream)).rejects.toBe(fault);
  });
});

describe('docker save load archive', () => {
  it('an image of 41 layers: every layer in order, and the stream gathers no listener per layer (Node warns past 10)', async () => {
    const layers = Array.from({ length: 41 }, (_, i) => Buffer.from(`layer ${i} `.repeat(i + 1)));
    const config = Buffer.from('{}');
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const stream = writeLoadArchive({
        configDigest: sha(config),
        config,
        repoTags: ['app:1'],
        layerPaths: layers.map((l) => `${sha(l).slice(7)}/layer.tar`),
        files: layers.map((l) => ({ name: `${sha(l).slice(7)}/layer.tar`, size: l.length, open: async () => Readable.from([l]) })),
      });
      const got = await entries(stream);
      expect(got.map(([n]) => n)).toEqual([`${sha(config).slice(7)}.json`, ...layers.map((l) => `${sha(l).slice(7)}/layer.tar`), 'manifest.json']);
      expect(got.slice(1, -1).every(([, b], i) => b.equals(layers[i]!))).toBe(true);
      expect(stream.listenerCount('close')).toBeLessThan(5);
      await new Promise((r) => setImmediate(r));
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});
