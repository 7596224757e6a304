import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { TarportError } from '../errors.js';
import { sniffCompression, type Compression } from './compression.js';
import { MAX_INDEXED, type TarArchive, type TarEntry } from './tar.js';

/** One layer of an image inside an archive, not yet read. */
export interface ArchiveLayer {
  /** The archive entry that holds the layer's bytes (symlinks and hard links resolved). */
  readonly entry: string;
  /** The uncompressed layer's digest, as the image config declares it (checked when read). */
  readonly diffId: string;
  /** Compression of the entry when the archive's own metadata declares it (OCI media type). */
  readonly declaredCompression?: Compression;
  readonly size: number;
}

/** An image found in a `docker save` archive (legacy or OCI layout) or an OCI image layout. */
export interface ArchiveImage {
  readonly format: 'docker-save' | 'docker-save-oci' | 'oci-layout';
  /** The config JSON exactly as stored: its digest is the image ID. */
  readonly config: Buffer;
  readonly configDigest: string;
  readonly layers: readonly ArchiveLayer[];
  /** Tags the archive carries for this image ("name:tag"); may be empty. */
  readonly repoTags: readonly string[];
}

export type ArchiveContent =
  | { readonly kind: 'images'; readonly images: readonly ArchiveImage[] }
  /** A `docker export` (or any) root file system tar: imported, not loaded. */
  | { readonly kind: 'rootfs' };

const MAX_LINK_DEPTH = 8;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const isDigest = (s: string) => DIGEST_RE.test(s);
const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/**
 * Reads what an archive holds, from its metadata only: no layer byte is read here. Every reference
 * is checked to stay inside the archive and to name a regular file.
 */
export async function readArchiveContent(tar: TarArchive): Promise<ArchiveContent> {
  const oci = tar.entries.has('index.json') && tar.entries.has('oci-layout');
  if (!tar.entries.has('manifest.json') && !oci) return { kind: 'rootfs' };
  checkImageShape(tar);
  if (tar.entries.has('manifest.json')) return { kind: 'images', images: await readDockerSave(tar) };
  return { kind: 'images', images: await readOciLayout(tar) };
}

/**
 * What no tool that saves images writes, refused even where no manifest names it: a root file system
 * is imported whole by the runtime, but an image archive is read entry by entry, and a second entry
 * of one name, a device or a sparse file there means the archive is not what it claims.
 */
function checkImageShape(tar: TarArchive): void {
  const s = tar.shape;
  if (s.overflow) throw bad(tar, `an image archive with more than ${MAX_INDEXED} entries: no image tool writes one (a root file system of that size must carry no manifest.json)`);
  if (s.duplicate !== undefined) throw bad(tar, `two entries are named ${JSON.stringify(s.duplicate)}: an image archive must name each entry once`);
  if (s.unusual) throw bad(tar, `entry ${JSON.stringify(s.unusual.name)} is ${s.unusual.what}: an image archive holds only files, folders and links`);
}

function bad(tar: TarArchive, msg: string): TarportError {
  return new TarportError('BAD_INPUT', `${tar.path}: ${msg}`);
}

async function readJson(tar: TarArchive, entry: string): Promise<unknown> {
  const buf = await tar.readEntry(entry);
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw bad(tar, `${entry} is not valid JSON (${(e as Error).message})`);
  }
}

/** Resolves a path found in archive metadata to a regular-file entry. */
export function resolveEntry(tar: TarArchive, ref: unknown, what: string, from = ''): TarEntry {
  if (typeof ref !== 'string' || ref === '') throw bad(tar, `${what}: missing path`);
  let path = ref;
  for (let depth = 0; ; depth++) {
    if (posix.isAbsolute(path)) throw bad(tar, `${what} points outside the archive (${JSON.stringify(ref)})`);
    const joined = posix.normalize(posix.join(from, path));
    if (joined === '..' || joined.startsWith('../')) throw bad(tar, `${what} points outside the archive (${JSON.stringify(ref)})`);
    const e = tar.entries.get(joined.replace(/^\.\//, ''));
    if (!e) throw bad(tar, `${what} names ${JSON.stringify(ref)}, which is not in the archive`);
    if (e.type === 'file') return e;
    if (depth >= MAX_LINK_DEPTH) throw bad(tar, `${what}: too many links from ${JSON.stringify(ref)}`);
    if (e.type === 'symlink') {
      from = posix.dirname(e.name);
      path = e.linkname;
      what = `${what} (symlink ${e.name} -> ${e.linkname})`;
    } else if (e.type === 'hardlink') {
      from = '';
      path = e.linkname;
    } else {
      throw bad(tar, `${what}: ${JSON.stringify(ref)} is a ${e.type}, not a file`);
    }
  }
}

function checkDigestName(tar: TarArchive, entry: TarEntry, bytes: Buffer, what: string): string {
  const digest = sha256(bytes);
  const m = /(?:^|\/)(?:sha256\/)?([0-9a-f]{64})(?:\.json)?$/.exec(entry.name);
  if (m && `sha256:${m[1]}` !== digest) throw bad(tar, `${what} ${entry.name} does not match its name (its digest is ${digest})`);
  return digest;
}

function parseConfig(tar: TarArchive, entry: string, bytes: Buffer): string[] {
  let cfg: unknown;
  try {
    cfg = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw bad(tar, `image config ${entry} is not valid JSON (${(e as Error).message})`);
  }
  const rootfs = (cfg as { rootfs?: { type?: unknown; diff_ids?: unknown } } | null)?.rootfs;
  if (!rootfs || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw bad(tar, `image config ${entry} has no rootfs.diff_ids: not an image config`);
  }
  for (const d of rootfs.diff_ids) {
    if (typeof d !== 'string' || !isDigest(d)) throw bad(tar, `image config ${entry}: invalid diff_id ${JSON.stringify(d)}`);
  }
  return rootfs.diff_ids as string[];
}

function compressionOfMediaType(mt: unknown): Compression | undefined {
  if (typeof mt !== 'string') return undefined;
  if (mt.endsWith('+gzip') || mt.endsWith('.gzip')) return 'gzip';
  if (mt.endsWith('+zstd') || mt.endsWith('.zstd')) return 'zstd';
  if (mt.endsWith('.tar') || mt.endsWith('tar.diff') || mt.endsWith('.rootfs.diff.tar')) return 'none';
  return undefined;
}

async function readDockerSave(tar: TarArchive): Promise<ArchiveImage[]> {
  const manifest = await readJson(tar, 'manifest.json');
  if (!Array.isArray(manifest) || manifest.length === 0) throw bad(tar, 'manifest.json is not a list of images');
  const oci = tar.entries.has('oci-layout');
  // Docker 25+ archives also carry index.json with media types; use them where they match a layer.
  const mediaTypes = oci && tar.entries.has('index.json') ? await ociMediaTypes(tar) : new Map<string, string>();
  const images: ArchiveImage[] = [];
  for (const [i, item] of manifest.entries()) {
    const m = item as { Config?: unknown; RepoTags?: unknown; Layers?: unknown };
    const where = `manifest.json[${i}]`;
    const cfgEntry = resolveEntry(tar, m.Config, `${where}.Config`);
    const config = await tar.readEntry(cfgEntry.name);
    const configDigest = checkDigestName(tar, cfgEntry, config, 'image config');
    const diffIds = parseConfig(tar, cfgEntry.name, config);
    if (!Array.isArray(m.Layers)) throw bad(tar, `${where}.Layers is missing`);
    if (m.Layers.length !== diffIds.length) {
      throw bad(tar, `${where} lists ${m.Layers.length} layers but its config ${cfgEntry.name} has ${diffIds.length} diff_ids`);
    }
    const layers = m.Layers.map((ref: unknown, j: number): ArchiveLayer => {
      const e = resolveEntry(tar, ref, `${where}.Layers[${j}]`);
      const hex = /(?:^|\/)sha256\/([0-9a-f]{64})$/.exec(e.name)?.[1];
      const declared = hex ? compressionOfMediaType(mediaTypes.get(`sha256:${hex}`)) : undefined;
      return { entry: e.name, diffId: diffIds[j]!, size: e.size, ...(declared ? { declaredCompression: declared } : {}) };
    });
    const repoTags = m.RepoTags == null ? [] : m.RepoTags;
    if (!Array.isArray(repoTags) || repoTags.some((t) => typeof t !== 'string')) throw bad(tar, `${where}.RepoTags is not a list of strings`);
    images.push({ format: oci ? 'docker-save-oci' : 'docker-save', config, configDigest, layers, repoTags: repoTags as string[] });
  }
  return images;
}

interface Descriptor {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
  annotations?: Record<string, unknown>;
}

/** A descriptor's size is the blob's: a layer declared tiny that is huge is refused before it is read. */
function checkDeclaredSize(tar: TarArchive, d: Descriptor, e: TarEntry, what: string): void {
  if (d.size !== e.size) throw bad(tar, `${what}: the descriptor declares ${JSON.stringify(d.size)} bytes, but ${e.name} holds ${e.size}`);
}

function blobEntryName(tar: TarArchive, d: Descriptor, what: string): string {
  if (typeof d.digest !== 'string' || !isDigest(d.digest)) throw bad(tar, `${what}: invalid digest ${JSON.stringify(d.digest)}`);
  return `blobs/sha256/${d.digest.slice(7)}`;
}

/** Every descriptor's media type reachable from index.json (manifests and their layers). */
async function ociMediaTypes(tar: TarArchive): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const { manifest } of await ociManifests(tar)) {
    for (const [j, l] of ((manifest.layers as Descriptor[] | undefined) ?? []).entries()) {
      const blob = typeof l.digest === 'string' && isDigest(l.digest) ? tar.entries.get(`blobs/sha256/${l.digest.slice(7)}`) : undefined;
      if (blob?.type === 'file') checkDeclaredSize(tar, l, blob, `index.json layer ${j}`);
      if (typeof l.digest === 'string' && typeof l.mediaType === 'string') out.set(l.digest, l.mediaType);
    }
  }
  return out;
}

async function ociManifests(tar: TarArchive): Promise<{ manifest: Record<string, unknown>; name?: string }[]> {
  const out: { manifest: Record<string, unknown>; name?: string }[] = [];
  const walk = async (index: unknown, what: string, depth: number, name?: string): Promise<void> => {
    const manifests = (index as { manifests?: unknown } | null)?.manifests;
    if (!Array.isArray(manifests)) throw bad(tar, `${what} has no manifests list`);
    for (const [i, d] of (manifests as Descriptor[]).entries()) {
      const w = `${what}.manifests[${i}]`;
      const entry = resolveEntry(tar, blobEntryName(tar, d, w), w);
      checkDeclaredSize(tar, d, entry, w);
      const refName = ociRefName(d.annotations) ?? name;
      const body = (await readJson(tar, entry.name)) as Record<string, unknown>;
      checkDigestName(tar, entry, await tar.readEntry(entry.name), w);
      const mt = (d.mediaType ?? body.mediaType) as string | undefined;
      if (mt?.includes('index') || mt?.includes('manifest.list')) {
        if (depth > 4) throw bad(tar, `${w}: indexes nested too deep`);
        await walk(body, w, depth + 1, refName);
      } else {
        out.push({ manifest: body, ...(refName ? { name: refName } : {}) });
      }
    }
  };
  await walk(await readJson(tar, 'index.json'), 'index.json', 0);
  return out;
}

function ociRefName(a: Record<string, unknown> | undefined): string | undefined {
  const full = a?.['io.containerd.image.name'];
  if (typeof full === 'string' && full.includes(':')) return full;
  const ref = a?.['org.opencontainers.image.ref.name'];
  if (typeof ref === 'string' && /[:]/.test(ref) && !ref.startsWith(':')) return ref;
  return undefined;
}

async function readOciLayout(tar: TarArchive): Promise<ArchiveImage[]> {
  const images: ArchiveImage[] = [];
  for (const [i, { manifest, name }] of (await ociManifests(tar)).entries()) {
    const what = `index.json image ${i}`;
    const cfgDesc = manifest.config as Descriptor | undefined;
    if (!cfgDesc) throw bad(tar, `${what}: manifest has no config`);
    const cfgEntry = resolveEntry(tar, blobEntryName(tar, cfgDesc, `${what} config`), `${what} config`);
    checkDeclaredSize(tar, cfgDesc, cfgEntry, `${what} config`);
    const config = await tar.readEntry(cfgEntry.name);
    const configDigest = checkDigestName(tar, cfgEntry, config, 'image config');
    const diffIds = parseConfig(tar, cfgEntry.name, config);
    const descs = (manifest.layers as Descriptor[] | undefined) ?? [];
    if (descs.length !== diffIds.length) throw bad(tar, `${what}: ${descs.length} layers but ${diffIds.length} diff_ids in the config`);
    const layers = descs.map((d, j): ArchiveLayer => {
      const e = resolveEntry(tar, blobEntryName(tar, d, `${what} layer ${j}`), `${what} layer ${j}`);
      checkDeclaredSize(tar, d, e, `${what} layer ${j}`);
      const declared = compressionOfMediaType(d.mediaType);
      return { entry: e.name, diffId: diffIds[j]!, size: e.size, ...(declared ? { declaredCompression: declared } : {}) };
    });
    images.push({ format: 'oci-layout', config, configDigest, layers, repoTags: name ? [name] : [] });
  }
  return images;
}

/** Reads the first bytes of a stream to tell its compression, then puts them back. */
export async function sniffStream(stream: Readable): Promise<Compression> {
  const head = await new Promise<Buffer>((resolve, reject) => {
    const cleanup = () => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    const onReadable = () => {
      const c = stream.read() as Buffer | null;
      if (c !== null) {
        cleanup();
        // put the bytes back at once: after the microtask the stream may already have ended
        stream.unshift(c);
        resolve(c);
      }
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.alloc(0));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('error', onError);
  });
  return sniffCompression(head);
}
