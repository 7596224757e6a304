#!/usr/bin/env node
// Builds a multi-platform image from a legacy `docker save` archive of one amd64 image:
//   linux/amd64  the image, runnable (its config says TARPORT_PLATFORM=amd64)
//   linux/arm64/v8  the same layers under a config edited to arm64 (TARPORT_PLATFORM=arm64): it must
//                never be loaded on an amd64 consumer (it would even run there: busybox is amd64)
//   a BuildKit attestation manifest (platform unknown/unknown, an in-toto layer) for the amd64 image
// Usage: oci-multi.mjs IN.tar OUTDIR NAME:TAG
// Writes OUTDIR/layout/ (an OCI image layout as buildx type=oci writes it: index.json names one nested
// index; skopeo --all reads it), and beside it:
//   multi-layout.tar   that layout as a tar (buildx --output type=oci,dest=…)
//   multi-flat.tar     index.json listing the platform manifests itself (no nested index)
//   multi-docker25.tar Docker 25+ `docker save` with the containerd store: manifest.json names the
//                      local platform only; the index lists linux/s390x too, whose blobs are missing
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';

const [input, outDir, ref] = process.argv.slice(2);
if (!input || !outDir || !ref) {
  console.error('usage: oci-multi.mjs IN.tar OUTDIR NAME:TAG');
  process.exit(2);
}
const files = new Map();
const links = new Map();
const extract = tar.extract();
const reading = (async () => {
  for await (const e of extract) {
    const name = e.header.name.replace(/^\.\//, '');
    if (e.header.type === 'symlink') links.set(name, e.header.linkname);
    const chunks = [];
    for await (const c of e) chunks.push(c);
    if (e.header.type === 'file') files.set(name, Buffer.concat(chunks));
  }
})();
await pipeline(createReadStream(input), extract);
await reading;
const resolve = (p) => {
  for (let i = 0; i < 8 && !files.has(p) && links.has(p); i++) {
    const dir = p.split('/').slice(0, -1).join('/');
    p = new URL(links.get(p), `file:///${dir}/`).pathname.slice(1);
  }
  return files.get(p);
};
const sha = (b) => createHash('sha256').update(b).digest('hex');
const [item] = JSON.parse(files.get('manifest.json'));

const blobs = new Map(); // hex -> bytes
const put = (bytes) => {
  const hex = sha(bytes);
  blobs.set(hex, bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
};
const json = (v) => Buffer.from(JSON.stringify(v));
const layers = item.Layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...put(resolve(l)) }));
const baseConfig = JSON.parse(resolve(item.Config));

function image(arch, variant) {
  const cfg = structuredClone(baseConfig);
  cfg.architecture = arch;
  if (variant) cfg.variant = variant;
  else delete cfg.variant;
  cfg.config = { ...(cfg.config ?? {}), Env: [...(cfg.config?.Env ?? []), `TARPORT_PLATFORM=${arch}`] };
  const config = { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(json(cfg)) };
  const m = put(json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers }));
  return { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, platform: { architecture: arch, os: 'linux', ...(variant ? { variant } : {}) } };
}
const amd64 = image('amd64');
const arm64 = image('arm64', 'v8');

// BuildKit's attestation manifest (docs: attestation-storage.md): an image manifest whose config says
// unknown/unknown and whose one layer is an in-toto statement about the amd64 manifest
const statement = json({ _type: 'https://in-toto.io/Statement/v0.1', predicateType: 'https://spdx.dev/Document', subject: [{ name: ref, digest: { sha256: amd64.digest.slice(7) } }], predicate: { spdxVersion: 'SPDX-2.3' } });
const intoto = { mediaType: 'application/vnd.in-toto+json', ...put(statement), annotations: { 'in-toto.io/predicate-type': 'https://spdx.dev/Document' } };
const attCfg = { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(json({ architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: [`sha256:${sha(statement)}`] } })) };
const att = {
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  ...put(json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: attCfg, layers: [intoto] })),
  platform: { architecture: 'unknown', os: 'unknown' },
  annotations: { 'vnd.docker.reference.digest': amd64.digest, 'vnd.docker.reference.type': 'attestation-manifest' },
};

const indexOf = (manifests) => ({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests });
const nested = { mediaType: 'application/vnd.oci.image.index.v1+json', ...put(json(indexOf([amd64, arm64, att]))) };
const [name, tag] = [ref.slice(0, ref.lastIndexOf(':')), ref.slice(ref.lastIndexOf(':') + 1)];
const qualified = (name.includes('/') ? (name.split('/')[0].includes('.') ? name : `docker.io/${name}`) : `docker.io/library/${name}`) + `:${tag}`;
const layoutIndex = indexOf([{ ...nested, annotations: { 'io.containerd.image.name': qualified, 'org.opencontainers.image.ref.name': tag } }]);

// a platform listed with its manifest missing (Docker 25+ saves what is local only)
const s390x = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(Buffer.from('not here'))}`, size: 1234, platform: { architecture: 's390x', os: 'linux' } };
const withAbsent = { mediaType: 'application/vnd.oci.image.index.v1+json', ...put(json(indexOf([amd64, arm64, att, s390x]))) };

const LAYOUT = json({ imageLayoutVersion: '1.0.0' });
const blobEntries = (keep) => [...blobs].filter(([hex]) => keep(hex)).map(([hex, b]) => [`blobs/sha256/${hex}`, b]);

async function writeTar(path, entries) {
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(path));
  for (const [n, b] of entries) pack.entry({ name: n, size: b.length, mode: 0o644, mtime: new Date(0) }, b);
  pack.finalize();
  await done;
}

mkdirSync(join(outDir, 'layout', 'blobs', 'sha256'), { recursive: true });
writeFileSync(join(outDir, 'layout', 'oci-layout'), LAYOUT);
writeFileSync(join(outDir, 'layout', 'index.json'), json(layoutIndex));
const unusedByLayout = new Set([withAbsent.digest.slice(7)]);
for (const [hex, b] of blobs) if (!unusedByLayout.has(hex)) writeFileSync(join(outDir, 'layout', 'blobs', 'sha256', hex), b);

await writeTar(join(outDir, 'multi-layout.tar'), [['oci-layout', LAYOUT], ['index.json', json(layoutIndex)], ...blobEntries((h) => !unusedByLayout.has(h))]);
const named = (d) => ({ ...d, annotations: { ...(d.annotations ?? {}), 'org.opencontainers.image.ref.name': ref } });
await writeTar(join(outDir, 'multi-flat.tar'), [
  ['oci-layout', LAYOUT],
  ['index.json', json(indexOf([named(amd64), named(arm64), named(att)]))],
  ...blobEntries((h) => h !== nested.digest.slice(7) && h !== withAbsent.digest.slice(7)),
]);
const docker25Index = indexOf([{ ...withAbsent, annotations: { 'io.containerd.image.name': qualified, 'org.opencontainers.image.ref.name': tag } }]);
const amd64Manifest = JSON.parse(blobs.get(amd64.digest.slice(7)));
const manifestJson = [{ Config: `blobs/sha256/${amd64Manifest.config.digest.slice(7)}`, RepoTags: [ref], Layers: layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`) }];
await writeTar(join(outDir, 'multi-docker25.tar'), [
  ['oci-layout', LAYOUT],
  ['index.json', json(docker25Index)],
  ['manifest.json', json(manifestJson)],
  ...blobEntries((h) => h !== nested.digest.slice(7)),
]);
console.log(JSON.stringify({ amd64: { manifest: amd64.digest, config: JSON.parse(blobs.get(amd64.digest.slice(7))).config.digest }, arm64: { manifest: arm64.digest, config: JSON.parse(blobs.get(arm64.digest.slice(7))).config.digest }, attestation: att.digest }));
