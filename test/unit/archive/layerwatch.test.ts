// src/archive/layerwatch.ts: layer-shaped entries reported as an archive goes by, whatever its chunking.
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { LayerWatch, type WatchedLayer } from '../../../src/archive/index.js';
import { dockerSave, header, ociLayout, pax, sha, tarBytes, type Item } from '../../corpus/tarwriter.js';

/** Feeds `bytes` in chunks of the given sizes (cycled) and returns what the watch reported. */
async function watched(bytes: Buffer, sizes: readonly number[]): Promise<{ layers: WatchedLayer[]; watch: LayerWatch }> {
  const watch = new LayerWatch();
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!;
    watch.write(bytes.subarray(at, at + n));
    at += n;
  }
  watch.end();
  const layers: WatchedLayer[] = [];
  for await (const l of watch.layers()) layers.push(l);
  return { layers, watch };
}

/** Where each item's data starts in tarBytes(items) (no extended headers in between). */
function offsets(items: readonly Item[]): Map<string, number> {
  const out = new Map<string, number>();
  let at = 0;
  for (const it of items) {
    at += 512;
    out.set(it.name, at);
    const n = it.data?.length ?? 0;
    at += n + ((512 - (n % 512)) % 512);
  }
  return out;
}

describe('LayerWatch', () => {
  const save = dockerSave();
  const bytes = tarBytes(save.items);
  const at = offsets(save.items);
  const expected = save.layerPaths.map((name) => {
    const data = save.items.find((i) => i.name === name)!.data!;
    return { name, offset: at.get(name)!, size: data.length, digest: `sha256:${sha(data)}`, form: 'tar' };
  });

  it.each([[[1 << 20]], [[1]], [[7, 513, 1000]], [[511, 2]]])('reports the layers of a docker save archive with their offsets and digests, in chunks of %j', async (sizes) => {
    const { layers, watch } = await watched(bytes, sizes);
    expect(layers).toEqual(expected);
    expect(watch.stopped).toBeUndefined();
    // the offsets are where the bytes are: what was hashed is what a reader of the file finds there
    for (const l of layers) expect(`sha256:${sha(bytes.subarray(l.offset, l.offset + l.size))}`).toBe(l.digest);
  });

  it('tells an OCI layout\'s layers by their first bytes: a plain tar, gzip, or a config that is neither', async () => {
    const plain = tarBytes([{ name: 'a.txt', data: Buffer.from('a\n') }]);
    const zipped = gzipSync(plain);
    const [oci1, oci2] = [ociLayout(plain, `sha256:${sha(plain)}`, 'application/vnd.oci.image.layer.v1.tar'), ociLayout(zipped, `sha256:${sha(plain)}`, 'application/vnd.oci.image.layer.v1.tar+gzip')];
    const forms = async (items: Item[]) => Object.fromEntries((await watched(tarBytes(items), [4096])).layers.map((l) => [l.name, l.form]));
    const config = (items: Item[]) => items[1]!.name;
    expect(await forms(oci1)).toEqual({ [config(oci1)]: 'other', [`blobs/sha256/${sha(plain)}`]: 'tar', [oci1[3]!.name]: 'other' });
    expect((await forms(oci2))[`blobs/sha256/${sha(zipped)}`]).toBe('gzip');
  });

  it('takes a name from a pax header or a GNU long name, and the size from pax', async () => {
    const layer = tarBytes([{ name: 'x', data: Buffer.alloc(3000, 7) }]);
    const longDir = 'd'.repeat(120);
    const items: Item[] = [
      pax({ path: 'p1/layer.tar' }),
      { name: 'ignored-by-pax', data: layer },
      { name: '././@LongLink', type: 'L', data: Buffer.from(`${longDir}/layer.tar\0`) },
      { name: 'short', data: layer },
      { name: 'other/file.bin', data: layer }, // not layer-shaped: not hashed, not reported
    ];
    const { layers } = await watched(tarBytes(items), [100]);
    expect(layers.map((l) => [l.name, l.size, l.digest])).toEqual([
      ['p1/layer.tar', layer.length, `sha256:${sha(layer)}`],
      [`${longDir}/layer.tar`, layer.length, `sha256:${sha(layer)}`],
    ]);
  });

  it('follows nothing in a compressed archive, and says why', async () => {
    const { layers, watch } = await watched(gzipSync(bytes), [4096]);
    expect(layers).toEqual([]);
    expect(watch.stopped).toMatch(/^the header at byte 0: /);
  });

  it('stops at a bad header: what came before stays reported, nothing after', async () => {
    const first = tarBytes(save.items.slice(0, 3), false); // the config, the first layer's folder and layer
    const bad = header({ name: 'x/layer.tar', data: Buffer.alloc(10) });
    bad[0] = bad[0]! ^ 1; // its checksum no longer holds
    const { layers, watch } = await watched(Buffer.concat([first, bad, tarBytes(save.items.slice(3))]), [777]);
    expect(layers).toEqual([expected[0]]);
    expect(watch.stopped).toBe(`the header at byte ${first.length}: header checksum mismatch`);
  });

  it('reports nothing after the end-of-archive marker', async () => {
    const { layers, watch } = await watched(Buffer.concat([tarBytes([]), tarBytes(save.items)]), [512]);
    expect(layers).toEqual([]);
    expect(watch.stopped).toBeUndefined();
  });

  it('hands a waiting reader each layer as it is seen, and ends the reading at end()', async () => {
    const watch = new LayerWatch();
    const it = watch.layers();
    const next = it.next();
    const cut = expected[0]!.offset + expected[0]!.size;
    watch.write(bytes.subarray(0, cut - 1));
    const pending = await Promise.race([next.then(() => 'reported'), new Promise((r) => setTimeout(() => r('waiting'), 20))]);
    expect(pending).toBe('waiting'); // one byte short of the layer's end
    watch.write(bytes.subarray(cut - 1, cut));
    expect((await next).value).toEqual(expected[0]);
    watch.end();
    watch.write(bytes.subarray(cut)); // after end(): ignored
    expect(await it.next()).toEqual({ done: true, value: undefined });
  });
});
