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

/** An OCI platform (GOOS/GOARCH names), as an index descriptor or an image config declares it. */
export interface ArchivePlatform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** An index descriptor as the archive holds it. */
export interface IndexDescriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: ArchivePlatform;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly artifactType?: string;
}

/** A blob of the archive kept as it is (the objects of an attestation or other artifact). */
export interface ArchiveBlob {
  readonly entry: string;
  readonly digest: string;
  readonly size: number;
  readonly mediaType: string;
}

/**
 * One member of an image index: a runnable image of one platform, an artifact that is not an image
 * (a BuildKit attestation: kept, never loaded), or a member whose blobs the archive lacks (Docker 25+
 * `docker save` of an image pulled for one platform lists the others without their blobs).
 */
export type IndexMember =
  | { readonly kind: 'image'; readonly descriptor: IndexDescriptor; readonly platform: ArchivePlatform; readonly image: ArchiveImage }
  | { readonly kind: 'artifact'; readonly descriptor: IndexDescriptor; readonly manifest: Buffer; readonly blobs: readonly ArchiveBlob[] }
  | { readonly kind: 'absent'; readonly descriptor: IndexDescriptor; readonly missing: string };

/** A multi-platform image: an OCI image index (nested indexes flattened), published as one release. */
export interface ArchiveIndex {
  /** The index's digest in the archive ("" for platforms listed in index.json itself). */
  readonly digest: string;
  readonly members: readonly IndexMember[];
  readonly repoTags: readonly string[];
}

export type ArchiveContent =
  | { readonly kind: 'images'; readonly images: readonly ArchiveImage[]; readonly indexes: readonly ArchiveIndex[] }
  /** A `docker export` (or any) root file system tar: imported, not loaded. */
  | { readonly kind: 'rootfs' };

const MAX_LINK_DEPTH = 8;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const isDigest = (s: string) => DIGEST_RE.test(s);
const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Index descriptors one read of an archive visits in all, nested indexes counted each time they are
 * listed: buildx writes a few dozen. Indexes that list the next one k times each would make k^depth.
 */
const MAX_DESCRIPTORS = 10_000;
/** Images one manifest.json may list: `docker save` of a whole image store stays far below. */
const MAX_SAVED_IMAGES = 4_096;

/** An image config as read once: its bytes, digest and diff_ids. */
interface Config {
  readonly bytes: Buffer;
  readonly digest: string;
  readonly diffIds: string[];
}

/**
 * One read of an archive's metadata. Each blob and config is read and parsed once however often the
 * metadata names it (memory and time then follow the archive's size, not the number of references
 * to one entry), and the index descriptors visited are counted against MAX_DESCRIPTORS.
 */
interface Reading {
  readonly tar: TarArchive;
  /** Manifest and index blobs, by resolved entry name. */
  readonly blobs: Map<string, { readonly bytes: Buffer; readonly body: Record<string, unknown> }>;
  /** Image configs, by resolved entry name. */
  readonly configs: Map<string, Config>;
  /** The platforms image configs declare, by config digest. */
  readonly platforms: Map<string, ArchivePlatform>;
  descriptors: number;
}

/** What an archive is taken for: `auto` tells by its metadata files (an image's manifest.json or OCI index). */
export type ArchiveKind = 'auto' | 'image' | 'rootfs';
export const ARCHIVE_KINDS: readonly ArchiveKind[] = ['auto', 'image', 'rootfs'];

/**
 * Reads what an archive holds, from its metadata only: no layer byte is read here. Every reference
 * is checked to stay inside the archive and to name a regular file.
 */
export async function readArchiveContent(tar: TarArchive, kind: ArchiveKind = 'auto'): Promise<ArchiveContent> {
  // a root file system may hold /manifest.json (or /index.json and /oci-layout) of its own: --kind rootfs
  if (kind === 'rootfs') return { kind: 'rootfs' };
  const oci = tar.entries.has('index.json') && tar.entries.has('oci-layout');
  if (!tar.entries.has('manifest.json') && !oci) {
    if (kind === 'image') throw bad(tar, 'not an image archive (no manifest.json, no OCI index.json and oci-layout), and --kind image says it is one');
    if (legacySave(tar)) {
      throw bad(tar, "an image archive as docker save wrote it before Docker 1.10 (repositories and <id>/layer.tar, no manifest.json), which tarport does not read: load it and save it again with a newer docker (docker load -i FILE, then docker save); a root file system that holds such files of its own: publish it with --kind rootfs");
    }
    return { kind: 'rootfs' };
  }
  try {
    return await readImageContent(tar, oci);
  } catch (e) {
    // an archive still being written (truncated), or image metadata that is only broken (a layer
    // missing), is no root file system's doing: the advice would publish a broken image as one
    if (kind !== 'auto' || !(e instanceof TarportError) || e.code !== 'BAD_INPUT' || e.truncated || !(await foreignMetadata(tar))) throw e;
    const own = oci ? 'index.json and oci-layout' : 'manifest.json';
    throw new TarportError('BAD_INPUT', `${e.message} (a root file system that holds ${own} of its own: publish it with --kind rootfs)`, { cause: e, retryable: e.retryable });
  }
}

/**
 * The layout of `docker save` before Docker 1.10: a `repositories` file and a folder per layer, named
 * by a 64-digit id, holding `json` and `layer.tar`. Taken for a root file system, it would publish
 * as one layer of nested tars that runs nothing.
 */
function legacySave(tar: TarArchive): boolean {
  if (tar.entries.get('repositories')?.type !== 'file') return false;
  return tar.order.some((n) => /^[0-9a-f]{64}\/layer\.tar$/.test(n) && tar.entries.has(n.replace(/layer\.tar$/, 'json')));
}

/**
 * Whether the file that made the archive look like an image is not an image tool's: a manifest.json
 * that is not `docker save`'s list of images, or an index.json without a manifests list (and no
 * manifest.json beside it, as Docker 25.0.0's `docker save` of an ID writes).
 */
async function foreignMetadata(tar: TarArchive): Promise<boolean> {
  const save = tar.entries.has('manifest.json');
  try {
    const v = JSON.parse((await tar.readEntry(save ? 'manifest.json' : 'index.json')).toString('utf8')) as unknown;
    const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
    if (save) return !Array.isArray(v) || !v.every((m) => isObject(m) && 'Config' in m && 'Layers' in m);
    return !isObject(v) || !Array.isArray(v.manifests);
  } catch {
    return true; // not JSON, or not a file that reads
  }
}

async function readImageContent(tar: TarArchive, oci: boolean): Promise<ArchiveContent> {
  checkImageShape(tar);
  const r: Reading = { tar, blobs: new Map(), configs: new Map(), platforms: new Map(), descriptors: 0 };
  // an index in index.json is the whole truth: Docker 25+ lists only the local platform in manifest.json
  if (oci && (await holdsIndex(r))) return { kind: 'images', ...(await readOciContent(r)) };
  if (tar.entries.has('manifest.json')) return { kind: 'images', images: await readDockerSave(r), indexes: [] };
  return { kind: 'images', images: await readOciLayout(r), indexes: [] };
}

/** Counts one more index descriptor visited; refuses the archive past MAX_DESCRIPTORS. */
function visit(r: Reading, what: string): void {
  if (++r.descriptors > MAX_DESCRIPTORS) {
    throw bad(r.tar, `${what}: more than ${MAX_DESCRIPTORS} descriptors in its indexes (indexes that list other indexes many times): no image tool writes that`);
  }
}

/** Refuses an index already being read above `what`: a link can make a blob list its own digest. */
function enterIndex(r: Reading, d: Descriptor, what: string, path: readonly string[]): string[] {
  const digest = d.digest as string; // checked by blobEntryName when its blob was read
  if (path.includes(digest)) throw bad(r.tar, `${what} names index ${digest} again while reading it: a loop`);
  return [...path, digest];
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

/** An image config entry, read and checked once (an archive may name one config many times). */
async function readConfig(r: Reading, e: TarEntry): Promise<Config> {
  let c = r.configs.get(e.name);
  if (!c) {
    const bytes = await r.tar.readEntry(e.name);
    c = { bytes, digest: checkDigestName(r.tar, e, bytes, 'image config'), diffIds: parseConfig(r.tar, e.name, bytes) };
    r.configs.set(e.name, c);
  }
  return c;
}

async function readDockerSave(r: Reading): Promise<ArchiveImage[]> {
  const { tar } = r;
  const manifest = await readJson(tar, 'manifest.json');
  if (!Array.isArray(manifest) || manifest.length === 0) throw bad(tar, 'manifest.json is not a list of images');
  if (manifest.length > MAX_SAVED_IMAGES) throw bad(tar, `manifest.json lists ${manifest.length} images, more than the ${MAX_SAVED_IMAGES} accepted`);
  // Docker 25+ archives also carry index.json with media types; use them where they match a layer.
  const mediaTypes = tar.entries.has('oci-layout') && tar.entries.has('index.json') ? await ociMediaTypes(r) : new Map<string, string>();
  const images: ArchiveImage[] = [];
  for (const [i, item] of manifest.entries()) {
    if (!isObject(item)) throw bad(tar, `manifest.json[${i}] is not an object`);
    images.push(await savedImage(r, item, `manifest.json[${i}]`, mediaTypes));
  }
  return images;
}

/** One image of manifest.json. */
async function savedImage(r: Reading, m: Record<string, unknown>, where: string, mediaTypes: ReadonlyMap<string, string>): Promise<ArchiveImage> {
  const { tar } = r;
  const cfgEntry = resolveEntry(tar, m.Config, `${where}.Config`);
  const { bytes: config, digest: configDigest, diffIds } = await readConfig(r, cfgEntry);
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
  return { format: tar.entries.has('oci-layout') ? 'docker-save-oci' : 'docker-save', config, configDigest, layers, repoTags: repoTags as string[] };
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

/** The descriptors of a manifest's `layers` (none when it has none), each checked to be an object. */
function layerDescriptors(tar: TarArchive, manifest: Record<string, unknown>, where: string): Descriptor[] {
  const layers = manifest.layers;
  if (layers === undefined) return [];
  if (!Array.isArray(layers)) throw bad(tar, `${where}: layers is not a list`);
  for (const [j, l] of layers.entries()) if (!isObject(l)) throw bad(tar, `${where}: layers[${j}] is not a descriptor`);
  return layers as Descriptor[];
}

/** Every descriptor's media type reachable from index.json (manifests and their layers). */
async function ociMediaTypes(r: Reading): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const { manifest, entry } of await ociManifests(r)) {
    for (const [j, l] of layerDescriptors(r.tar, manifest, `manifest ${entry}`).entries()) {
      const blob = typeof l.digest === 'string' && isDigest(l.digest) ? r.tar.entries.get(`blobs/sha256/${l.digest.slice(7)}`) : undefined;
      if (blob?.type === 'file') checkDeclaredSize(r.tar, l, blob, `index.json layer ${j}`);
      if (typeof l.digest === 'string' && typeof l.mediaType === 'string') out.set(l.digest, l.mediaType);
    }
  }
  return out;
}

interface LayoutManifest {
  readonly manifest: Record<string, unknown>;
  /** Its blob's entry. */
  readonly entry: string;
  readonly name?: string;
}

/** The image manifests index.json leads to, nested indexes flattened (the images of a layout). */
async function ociManifests(r: Reading): Promise<LayoutManifest[]> {
  const out: LayoutManifest[] = [];
  const walk = async (list: readonly Descriptor[], what: string, path: readonly string[], name?: string): Promise<void> => {
    for (const [i, d] of list.entries()) {
      const w = `${what}.manifests[${i}]`;
      visit(r, w);
      const { entry, body } = await readBlobJson(r, d, w);
      const refName = ociRefName(d.annotations) ?? name;
      const mt = d.mediaType ?? body.mediaType;
      if (mt !== undefined && typeof mt !== 'string') throw bad(r.tar, `${w}: mediaType ${JSON.stringify(mt)} is not a string`);
      if (mt?.includes('index') || mt?.includes('manifest.list')) {
        if (path.length > 4) throw bad(r.tar, `${w}: indexes nested too deep`);
        await walk(descriptorsOf(r.tar, body, `${w} (${entry})`), w, enterIndex(r, d, w, path), refName);
      } else {
        out.push({ manifest: body, entry, ...(refName ? { name: refName } : {}) });
      }
    }
  };
  await walk(await indexJsonDescriptors(r), 'index.json', []);
  return out;
}

function ociRefName(a: Record<string, unknown> | undefined): string | undefined {
  const full = a?.['io.containerd.image.name'];
  if (typeof full === 'string' && full.includes(':')) return full;
  const ref = a?.['org.opencontainers.image.ref.name'];
  if (typeof ref === 'string' && /[:]/.test(ref) && !ref.startsWith(':')) return ref;
  return undefined;
}

/**
 * One image per manifest, with every name index.json gives it: skopeo's `oci:DIR:REF` adds an entry
 * per copy, so one manifest may be listed under a full name and again under a bare tag (no name).
 */
async function readOciLayout(r: Reading): Promise<ArchiveImage[]> {
  const byEntry = new Map<string, { manifest: Record<string, unknown>; at: number; names: Set<string> }>();
  for (const [i, { manifest, entry, name }] of (await ociManifests(r)).entries()) {
    const seen = byEntry.get(entry) ?? byEntry.set(entry, { manifest, at: i, names: new Set() }).get(entry)!;
    if (name) seen.names.add(name);
  }
  const images: ArchiveImage[] = [];
  for (const [entry, { manifest, at, names }] of byEntry) images.push(await readOciImage(r, manifest, `index.json image ${at}: manifest ${entry}`, [...names]));
  return images;
}

/** One image of an OCI layout from its manifest: config and layers, each checked against its descriptor. */
async function readOciImage(r: Reading, manifest: Record<string, unknown>, what: string, repoTags: string[]): Promise<ArchiveImage> {
  const { tar } = r;
  const cfgDesc = manifest.config;
  if (!isObject(cfgDesc)) throw bad(tar, `${what}: manifest has no config`);
  const cfgEntry = resolveEntry(tar, blobEntryName(tar, cfgDesc, `${what} config`), `${what} config`);
  checkDeclaredSize(tar, cfgDesc, cfgEntry, `${what} config`);
  const { bytes: config, digest: configDigest, diffIds } = await readConfig(r, cfgEntry);
  const descs = layerDescriptors(tar, manifest, what);
  if (descs.length !== diffIds.length) throw bad(tar, `${what}: ${descs.length} layers but ${diffIds.length} diff_ids in the config`);
  const layers = descs.map((d, j): ArchiveLayer => {
    const e = resolveEntry(tar, blobEntryName(tar, d, `${what} layer ${j}`), `${what} layer ${j}`);
    checkDeclaredSize(tar, d, e, `${what} layer ${j}`);
    const declared = compressionOfMediaType(d.mediaType);
    return { entry: e.name, diffId: diffIds[j]!, size: e.size, ...(declared ? { declaredCompression: declared } : {}) };
  });
  return { format: 'oci-layout', config, configDigest, layers, repoTags };
}

// ---- image indexes ---------------------------------------------------------------------------

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);
/** BuildKit marks attestation manifests so (docs: buildkit attestation-storage.md). */
export const REFERENCE_TYPE = 'vnd.docker.reference.type';
export const REFERENCE_DIGEST = 'vnd.docker.reference.digest';
const MAX_INDEX_DEPTH = 4;

const isIndexType = (mt: unknown) => typeof mt === 'string' && INDEX_TYPES.has(mt);
const isAttestation = (d: Descriptor) => d.annotations?.[REFERENCE_TYPE] !== undefined;

/** True when index.json holds an image index, or lists one name's platforms side by side. */
async function holdsIndex(r: Reading): Promise<boolean> {
  const list = await indexJsonDescriptors(r);
  if (list.some((d) => isIndexType(d.mediaType))) return true;
  return [...groupPlatformDescriptors(list).values()].some((g) => isPlatformGroup(g.map(([d]) => d)));
}

/**
 * What index.json lists. Docker 25.0.0 and 25.0.1 `docker save <ID>` write `"manifests": null` beside
 * a valid manifest.json (moby#47210), and docker load takes it: with a manifest.json, no list is an
 * empty one. An OCI layout without manifest.json must list its manifests.
 */
async function indexJsonDescriptors(r: Reading): Promise<Descriptor[]> {
  const index = await readJson(r.tar, 'index.json');
  if (isObject(index) && index.manifests == null && r.tar.entries.has('manifest.json')) return [];
  return descriptorsOf(r.tar, index, 'index.json');
}

function descriptorsOf(tar: TarArchive, index: unknown, what: string): Descriptor[] {
  const manifests = isObject(index) ? index.manifests : undefined;
  if (!Array.isArray(manifests)) throw bad(tar, `${what} has no manifests list`);
  for (const [i, d] of manifests.entries()) {
    if (!isObject(d)) throw bad(tar, `${what}.manifests[${i}] is not a descriptor`);
  }
  return manifests as Descriptor[];
}

/** Manifests listed in index.json with a platform (or as an attestation), by the name they carry. */
function groupPlatformDescriptors(list: readonly Descriptor[]): Map<string, [Descriptor, number][]> {
  const groups = new Map<string, [Descriptor, number][]>();
  for (const [i, d] of list.entries()) {
    if (isIndexType(d.mediaType) || ((d as { platform?: unknown }).platform === undefined && !isAttestation(d))) continue;
    const name = ociRefName(d.annotations) ?? '';
    groups.set(name, [...(groups.get(name) ?? []), [d, i]]);
  }
  return groups;
}

/** A group of index.json entries is one multi-platform image when it has two or more members, or an attestation. */
const isPlatformGroup = (g: readonly Descriptor[]) => g.length > 1 || g.some(isAttestation);

/**
 * What an OCI layout holds when it holds an index: single images as before, and each index (or each
 * group of platform manifests listed side by side in index.json under one name) as one ArchiveIndex.
 */
async function readOciContent(r: Reading): Promise<{ images: ArchiveImage[]; indexes: ArchiveIndex[] }> {
  const list = await indexJsonDescriptors(r);
  const images: ArchiveImage[] = [];
  const indexes: ArchiveIndex[] = [];
  const groups = groupPlatformDescriptors(list);
  const grouped = new Set([...groups.values()].filter((g) => isPlatformGroup(g.map(([d]) => d))).flat().map(([, i]) => i));
  for (const [i, d] of list.entries()) {
    const w = `index.json.manifests[${i}]`;
    const name = ociRefName(d.annotations);
    if (grouped.has(i)) continue;
    visit(r, w);
    const { entry, body } = await readBlobJson(r, d, w);
    if (isIndexType(d.mediaType) || isIndexType(body.mediaType)) {
      indexes.push({ digest: d.digest as string, members: await indexMembers(r, body, w, 1, enterIndex(r, d, w, [])), repoTags: name ? [name] : [] });
    } else {
      images.push(await readOciImage(r, body, `index.json image ${i}: manifest ${entry}`, name ? [name] : []));
    }
  }
  for (const [name, g] of groups) {
    if (!g.every(([, i]) => grouped.has(i))) continue;
    const members: IndexMember[] = [];
    for (const [d, i] of g) {
      visit(r, `index.json.manifests[${i}]`);
      members.push(...(await indexMember(r, d, `index.json.manifests[${i}]`, 1, [])));
    }
    indexes.push({ digest: '', members, repoTags: name ? [name] : [] });
  }
  return { images, indexes };
}

/** A manifest or index blob as a JSON object, checked against its descriptor; read and parsed once. */
async function readBlobJson(r: Reading, d: Descriptor, what: string): Promise<{ entry: string; bytes: Buffer; body: Record<string, unknown> }> {
  const { tar } = r;
  const entry = resolveEntry(tar, blobEntryName(tar, d, what), what);
  checkDeclaredSize(tar, d, entry, what);
  let blob = r.blobs.get(entry.name);
  if (!blob) {
    const bytes = await tar.readEntry(entry.name);
    checkDigestName(tar, entry, bytes, what);
    let body: unknown;
    try {
      body = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw bad(tar, `${what}: ${entry.name} is not valid JSON (${(e as Error).message})`);
    }
    if (!isObject(body)) throw bad(tar, `${what}: ${entry.name} is not a JSON object`);
    blob = { bytes, body };
    r.blobs.set(entry.name, blob);
  }
  return { entry: entry.name, ...blob };
}

/**
 * The members of an index, nested indexes flattened. `depth`: indexes above it; `path`: the digests
 * of the indexes being read above it (a loop check).
 */
async function indexMembers(r: Reading, index: Record<string, unknown>, what: string, depth: number, path: readonly string[]): Promise<IndexMember[]> {
  const out: IndexMember[] = [];
  for (const [i, d] of descriptorsOf(r.tar, index, what).entries()) {
    const w = `${what}.manifests[${i}]`;
    visit(r, w);
    out.push(...(await indexMember(r, d, w, depth, path)));
  }
  return out;
}

/** A blob's entry when the archive holds it (links resolved), undefined when it does not. */
function presentBlob(tar: TarArchive, d: Descriptor, what: string): TarEntry | undefined {
  const name = blobEntryName(tar, d, what);
  if (!tar.entries.has(name)) return undefined;
  const e = resolveEntry(tar, name, what);
  checkDeclaredSize(tar, d, e, what);
  return e;
}

/** One member of an index (several when it is itself an index: nested indexes are flattened). */
async function indexMember(r: Reading, d: Descriptor, what: string, depth: number, path: readonly string[]): Promise<IndexMember[]> {
  const { tar } = r;
  const descriptor = indexDescriptor(tar, d, what);
  if (!presentBlob(tar, d, what)) return [{ kind: 'absent', descriptor, missing: `its manifest ${descriptor.digest}` }];
  const { entry, bytes, body } = await readBlobJson(r, d, what);
  if (isIndexType(descriptor.mediaType) || isIndexType(body.mediaType)) {
    if (depth > MAX_INDEX_DEPTH) throw bad(tar, `${what}: indexes nested too deep`);
    return indexMembers(r, body, what, depth + 1, enterIndex(r, d, what, path));
  }
  const cfg = body.config;
  if (!isObject(cfg)) throw bad(tar, `${what}: manifest ${entry} has no config`);
  const layers = layerDescriptors(tar, body, `${what}: manifest ${entry}`);
  const parts: [Descriptor, string][] = [[cfg, `${what} config`], ...layers.map((l, j): [Descriptor, string] => [l, `${what} layer ${j}`])];
  const missing = parts.find(([p, w]) => !presentBlob(tar, p, w));
  if (missing) return [{ kind: 'absent', descriptor, missing: `its ${missing[1].slice(what.length + 1)} ${missing[0].digest as string}` }];
  if (isArtifactManifest(descriptor, body, cfg)) {
    const blobs = parts.map(([p, w]): ArchiveBlob => ({ entry: presentBlob(tar, p, w)!.name, digest: p.digest as string, size: p.size as number, mediaType: typeof p.mediaType === 'string' ? p.mediaType : 'application/octet-stream' }));
    return [{ kind: 'artifact', descriptor, manifest: bytes, blobs }];
  }
  const image = await readOciImage(r, body, `${what}: manifest ${entry}`, []);
  return [{ kind: 'image', descriptor, image, platform: descriptor.platform ?? platformOfConfig(r, image, what) }];
}

/**
 * Not a runnable image: a BuildKit attestation (annotated, platform unknown/unknown), an OCI artifact
 * (artifactType), or a manifest whose config is not an image config (Helm charts, signatures).
 */
function isArtifactManifest(d: IndexDescriptor, body: Record<string, unknown>, cfg: Descriptor): boolean {
  if (d.annotations?.[REFERENCE_TYPE] !== undefined || typeof body.artifactType === 'string') return true;
  if (d.platform && (d.platform.os === 'unknown' || d.platform.architecture === 'unknown')) return true;
  return !IMAGE_CONFIG_TYPES.has(cfg.mediaType as string);
}

function indexDescriptor(tar: TarArchive, d: Descriptor, what: string): IndexDescriptor {
  blobEntryName(tar, d, what); // checks the digest
  if (typeof d.mediaType !== 'string') throw bad(tar, `${what}: descriptor without a mediaType`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw bad(tar, `${what}: invalid size ${JSON.stringify(d.size)}`);
  const p = (d as { platform?: unknown }).platform;
  const annotations = d.annotations && typeof d.annotations === 'object' ? Object.fromEntries(Object.entries(d.annotations).filter((e): e is [string, string] => typeof e[1] === 'string')) : undefined;
  const artifactType = (d as { artifactType?: unknown }).artifactType;
  return {
    mediaType: d.mediaType,
    digest: d.digest as string,
    size: d.size,
    ...(p !== undefined ? { platform: platformOf(tar, p, what) } : {}),
    ...(annotations && Object.keys(annotations).length ? { annotations } : {}),
    ...(typeof artifactType === 'string' ? { artifactType } : {}),
  };
}

const PLATFORM_PART = /^[A-Za-z0-9_.-]{1,64}$/;

function platformOf(tar: TarArchive, p: unknown, what: string): ArchivePlatform {
  const o = (p ?? {}) as { os?: unknown; architecture?: unknown; variant?: unknown };
  const ok = (v: unknown) => typeof v === 'string' && PLATFORM_PART.test(v);
  if (!ok(o.os) || !ok(o.architecture) || (o.variant !== undefined && o.variant !== '' && !ok(o.variant))) {
    throw bad(tar, `${what}: invalid platform ${JSON.stringify(p)} (os, architecture and variant are short names such as linux, arm64, v8)`);
  }
  return { os: o.os as string, architecture: o.architecture as string, ...(typeof o.variant === 'string' && o.variant !== '' ? { variant: o.variant } : {}) };
}

/** The platform an image's config declares, by its digest (parsed once: many members may share one config). */
function platformOfConfig(r: Reading, image: ArchiveImage, what: string): ArchivePlatform {
  let p = r.platforms.get(image.configDigest);
  if (!p) {
    p = platformOf(r.tar, JSON.parse(image.config.toString('utf8')), `${what} config`);
    r.platforms.set(image.configDigest, p);
  }
  return p;
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
