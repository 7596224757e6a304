import { createHash } from 'node:crypto';

// A tar writer that writes what it is told, including what no honest tool writes: any typeflag, any
// name, raw size fields, pax and GNU long-name headers. The corpora build their hostile archives with it.

export interface Item {
  readonly name: string;
  /** The typeflag character ('0' file, '1' hard link, '2' symlink, '3' char device, '5' folder, 'x' pax, 'L' long name, 'S' sparse). */
  readonly type?: string;
  readonly data?: Buffer;
  readonly linkname?: string;
  /** The 12 bytes of the size field, as stored (for sizes the octal field cannot say). */
  readonly sizeField?: Buffer;
}

const oct = (v: number, len: number) => v.toString(8).padStart(len - 1, '0') + '\0';

export function header(it: Item): Buffer {
  const buf = Buffer.alloc(512);
  const name = Buffer.from(it.name, 'utf8');
  name.copy(buf, 0, 0, Math.min(100, name.length));
  buf.write(oct(it.type === '5' ? 0o755 : 0o644, 8), 100, 'latin1');
  buf.write(oct(0, 8), 108, 'latin1');
  buf.write(oct(0, 8), 116, 'latin1');
  if (it.sizeField) it.sizeField.copy(buf, 124, 0, 12);
  else buf.write(oct(it.data?.length ?? 0, 12), 124, 'latin1');
  buf.write(oct(0, 12), 136, 'latin1');
  buf.write('        ', 148, 'latin1');
  buf.write(it.type ?? '0', 156, 'latin1');
  if (it.linkname) buf.write(it.linkname, 157, 'utf8');
  buf.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += buf[i]!;
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return buf;
}

export const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

/** The bytes of items (headers, data, padding), and the end-of-archive marker when `end`. */
export function tarBytes(items: readonly Item[], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const it of items) {
    parts.push(header(it));
    if (it.data && !it.sizeField) parts.push(it.data, pad(it.data.length));
  }
  if (end) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** A pax extended header item with the given records. */
export function pax(records: Record<string, string>): Item {
  const recs = Object.entries(records).map(([k, v]) => {
    const body = ` ${k}=${v}\n`;
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    return `${len}${body}`;
  });
  return { name: 'PaxHeaders/x', type: 'x', data: Buffer.from(recs.join('')) };
}

export const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export interface Image {
  /** The items of a legacy `docker save` archive, manifest.json last (as docker writes it). */
  readonly items: Item[];
  readonly layerPaths: string[];
  readonly configName: string;
}

/** A small legacy `docker save` archive of one image (two layers) tagged `tag`. */
export function dockerSave(tag = 'corpus/app:1'): Image {
  const layers = [tarBytes([{ name: 'hello.txt', data: Buffer.from('hello\n') }]), tarBytes([{ name: 'etc/v', data: Buffer.from('2\n') }])];
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${sha(l)}`) } }));
  const configName = `${sha(config)}.json`;
  const layerPaths = layers.map((l, i) => `${sha(Buffer.from(`layer ${i}`))}/layer.tar`);
  const items: Item[] = [{ name: configName, data: config }];
  layers.forEach((l, i) => items.push({ name: layerPaths[i]!.split('/')[0]!, type: '5' }, { name: layerPaths[i]!, data: l }));
  items.push({ name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: layerPaths }])) });
  return { items, layerPaths, configName };
}

/** An OCI image layout archive of one image whose layer blob is `layer` (stored as is). */
export function ociLayout(layer: Buffer, diffId: string, mediaType: string, declaredSize = layer.length): Item[] {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha(config)}`, size: config.length },
      layers: [{ mediaType, digest: `sha256:${sha(layer)}`, size: declaredSize }],
    }),
  );
  const index = {
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(manifest)}`, size: manifest.length, annotations: { 'io.containerd.image.name': 'corpus/oci:1' } }],
  };
  return [
    { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    { name: 'blobs/sha256/' + sha(config), data: config },
    { name: 'blobs/sha256/' + sha(layer), data: layer },
    { name: 'blobs/sha256/' + sha(manifest), data: manifest },
    { name: 'index.json', data: Buffer.from(JSON.stringify(index)) },
  ];
}
