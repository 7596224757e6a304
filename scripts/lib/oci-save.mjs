#!/usr/bin/env node
// Turns a legacy `docker save` archive into a Docker 25+ style one (OCI layout: oci-layout,
// index.json, blobs/sha256/…, plus a manifest.json that points into blobs/), as Docker 25+ writes it.
// Usage: oci-save.mjs IN.tar OUT.tar none|gzip
//   none: uncompressed layer blobs (the classic image store); gzip: gzip layer blobs (the containerd
//   image store keeps and saves layers compressed).
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

const [input, output, mode] = process.argv.slice(2);
if (!input || !output || !['none', 'gzip'].includes(mode)) {
  console.error('usage: oci-save.mjs IN.tar OUT.tar none|gzip');
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
const manifest = JSON.parse(files.get('manifest.json'));
const out = tar.pack();
const writing = pipeline(out, createWriteStream(output));
const blobs = new Map();
const blob = (b) => {
  const h = sha(b);
  blobs.set(h, b);
  return { digest: `sha256:${h}`, size: b.length, path: `blobs/sha256/${h}` };
};
const newManifest = [];
const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] };
for (const m of manifest) {
  const config = blob(resolve(m.Config));
  const layers = m.Layers.map((l) => {
    const raw = resolve(l);
    return blob(mode === 'gzip' ? gzipSync(raw, { level: 1 }) : raw);
  });
  const mediaType = mode === 'gzip' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar';
  const oci = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType, digest: l.digest, size: l.size })),
    }),
  );
  const om = blob(oci);
  for (const t of m.RepoTags ?? []) {
    index.manifests.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: om.digest,
      size: om.size,
      annotations: { 'io.containerd.image.name': `docker.io/${t}`, 'org.opencontainers.image.ref.name': t.split(':').pop() },
    });
  }
  newManifest.push({ Config: config.path, RepoTags: m.RepoTags, Layers: layers.map((l) => l.path) });
}
const add = (name, data) => new Promise((res, rej) => out.entry({ name, mtime: new Date(0) }, data, (e) => (e ? rej(e) : res())));
for (const [h, b] of blobs) await add(`blobs/sha256/${h}`, b);
await add('index.json', Buffer.from(JSON.stringify(index)));
await add('manifest.json', Buffer.from(JSON.stringify(newManifest)));
await add('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
out.finalize();
await writing;
