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

/** The parts of a small multi-platform OCI layout (see multiPlatform). */
export interface MultiPlatform {
  readonly items: Item[];
  readonly amd64: { manifest: string; config: string };
  readonly arm64: { manifest: string; config: string };
  readonly attestation: string;
}

/**
 * A multi-platform OCI layout of one name: linux/amd64 and linux/arm64/v8 (the same layer under two
 * configs), a BuildKit attestation for amd64 and, with `absent`, linux/s390x listed without blobs.
 * `shape`: `nested` (index.json names one image index, as buildx and skopeo --all write) or `flat`
 * (index.json lists the platforms itself).
 */
export function multiPlatform(opts: { shape: 'nested' | 'flat'; absent?: boolean; ref?: string }): MultiPlatform {
  const ref = opts.ref ?? 'corpus/multi:1';
  const blobs = new Map<string, Buffer>();
  const put = (b: Buffer) => (blobs.set(sha(b), b), { digest: `sha256:${sha(b)}`, size: b.length });
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const layer = tarBytes([{ name: 'hello.txt', data: Buffer.from('hello\n') }]);
  const layerDesc = { mediaType: 'application/vnd.oci.image.layer.v1.tar', ...put(layer) };
  const image = (architecture: string, variant?: string) => {
    const config = { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(json({ architecture, os: 'linux', ...(variant ? { variant } : {}), rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] } })) };
    const m = put(json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layerDesc] }));
    return { desc: { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, platform: { architecture, os: 'linux', ...(variant ? { variant } : {}) } }, config: config.digest };
  };
  const amd64 = image('amd64');
  const arm64 = image('arm64', 'v8');
  const statement = json({ _type: 'https://in-toto.io/Statement/v0.1', subject: [{ digest: { sha256: amd64.desc.digest.slice(7) } }] });
  const attCfg = { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(json({ architecture: 'unknown', os: 'unknown', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(statement)}`] } })) };
  const att = {
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    ...put(json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: attCfg, layers: [{ mediaType: 'application/vnd.in-toto+json', ...put(statement) }] })),
    platform: { architecture: 'unknown', os: 'unknown' },
    annotations: { 'vnd.docker.reference.digest': amd64.desc.digest, 'vnd.docker.reference.type': 'attestation-manifest' },
  };
  const s390x = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(Buffer.from('absent'))}`, size: 999, platform: { architecture: 's390x', os: 'linux' } };
  const members = [amd64.desc, arm64.desc, att, ...(opts.absent ? [s390x] : [])];
  const named = (d: object) => ({ ...d, annotations: { ...((d as { annotations?: object }).annotations ?? {}), 'org.opencontainers.image.ref.name': ref } });
  const top =
    opts.shape === 'nested'
      ? [named({ mediaType: 'application/vnd.oci.image.index.v1+json', ...put(json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: members })) })]
      : members.map(named);
  const items: Item[] = [{ name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }];
  for (const [hex, b] of blobs) items.push({ name: `blobs/sha256/${hex}`, data: b });
  items.push({ name: 'index.json', data: json({ schemaVersion: 2, manifests: top }) });
  return { items, amd64: { manifest: amd64.desc.digest, config: amd64.config }, arm64: { manifest: arm64.desc.digest, config: arm64.config }, attestation: att.digest };
}
