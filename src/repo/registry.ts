import * as z from 'zod';
import { hexOf, sha256 } from '../crypto/index.js';
import { TarportError, isTarportError } from '../errors.js';
import { blobKey } from './layout.js';
import { isPortableFileName, qualifiedName } from './names.js';
import { MAX_RECORD_BYTES, partsKey } from './objects.js';
import { parseWith, serialize, type Catalog, type CatalogEntry } from './records.js';
import type { Store } from './store.js';

// The registry view (docs/mirror.md, "The mirror as a registry"): the few small files a static web
// server needs to answer the read side of the registry API from the repository's own files. Blobs
// are served from blobs/sha256/ as they are; a static server cannot know a manifest's media type or
// which manifest a tag names, so tarport writes copies of the top manifests under names that say it:
//
//   tarport/registry/<path>/_manifests/<tag>.<kind>   the tag's current release (replaced on update)
//   tarport/registry/_digests/<hex>.<kind>            every manifest served, by digest (immutable)
//   tarport/registry/view.json                        what the tag files hold (so a publish rewrites
//                                                     only what changed)
//
// <path> is the name's path in Docker's reference rules (docker.io/library/x → library/x,
// registry.example:5000/team/app → team/app): the path a registry client asks for.

export const REGISTRY_FOLDER = 'tarport/registry';
export const REGISTRY_DIGESTS_FOLDER = `${REGISTRY_FOLDER}/_digests`;
export const REGISTRY_VIEW_KEY = `${REGISTRY_FOLDER}/view.json`;

/** The file name extension that tells the web server each manifest media type (contrib/nginx/registry.conf). */
export const MANIFEST_KINDS: Readonly<Record<string, string>> = {
  'application/vnd.oci.image.manifest.v1+json': 'oci-manifest',
  'application/vnd.oci.image.index.v1+json': 'oci-index',
  'application/vnd.docker.distribution.manifest.v2+json': 'docker-manifest',
  'application/vnd.docker.distribution.manifest.list.v2+json': 'docker-list',
};

/** A release's top manifest: what a registry client gets for its tag (an image manifest, or an index). */
export interface TopManifest {
  readonly digest: string;
  readonly mediaType: string;
  readonly bytes: Buffer;
}

/**
 * The top manifest of a catalog entry, read from its object and checked against its digest.
 * Undefined for releases without one (encrypted images, root file systems). The one place that
 * says which manifest a release is served as.
 */
export async function topManifest(store: Store, entry: CatalogEntry, signal?: AbortSignal): Promise<TopManifest | undefined> {
  const desc = entry.manifest;
  if (!desc) return undefined;
  return { digest: desc.digest, mediaType: desc.mediaType, bytes: await readManifestObject(store, desc, signal) };
}

/** The path a registry client asks for under /v2/ (Docker's reference rules, the registry host dropped). */
export function registryPath(name: string): string {
  const q = qualifiedName(name);
  return q.slice(q.indexOf('/') + 1);
}

export const tagFileKey = (path: string, tag: string, kind: string) => `${REGISTRY_FOLDER}/${path}/_manifests/${tag}.${kind}`;
export const digestFileKey = (digest: string, kind: string) => `${REGISTRY_DIGESTS_FOLDER}/${hexOf(digest)}.${kind}`;

/** A tag the view serves: `<path>:<tag>` → the manifest digest and kind its tag file holds. */
const ViewSchema = z.strictObject({
  schema: z.literal('tarport.registry-view/v1'),
  tags: z.record(z.string(), z.strictObject({ digest: z.string(), kind: z.string() })),
  /** Releases the view leaves out, and why (check reports them). */
  skipped: z.array(z.strictObject({ ref: z.string(), reason: z.enum(['no-manifest', 'media-type', 'clash', 'unportable', 'manifest-missing']), why: z.string() })),
});
export type RegistryView = z.infer<typeof ViewSchema>;
/** A release the view leaves out: `no-manifest` (encrypted, root file system) is by design, the rest a user may want to know of. */
export type Skipped = RegistryView['skipped'][number];

export interface PlannedTag {
  readonly entry: CatalogEntry;
  readonly path: string;
  readonly kind: string;
}

/**
 * What the view should serve for a catalog: every image release with a top manifest, under its
 * registry path. Left out, with the reason: releases without a manifest (encrypted, root file
 * systems), unknown media types, and a second name that maps to the same path and tag (two
 * registry hosts with one path; the first in the catalog's order is served) or to a tag that
 * differs only in case (one file on case-insensitive storage), and a name or tag whose file name
 * FAT32, exFAT or NTFS refuse (CON, NUL, a trailing dot: the repository must stay copyable to a stick).
 */
export function planView(catalog: Catalog): { tags: Map<string, PlannedTag>; skipped: Skipped[] } {
  const tags = new Map<string, PlannedTag>();
  const folded = new Map<string, string>();
  const skipped: Skipped[] = [];
  for (const entry of catalog.releases) {
    const ref = `${entry.name}:${entry.tag}`;
    if (!entry.manifest) {
      skipped.push({ ref, reason: 'no-manifest', why: entry.kind === 'image' ? 'encrypted releases are not served as a registry' : 'a root file system has no image manifest' });
      continue;
    }
    const kind = MANIFEST_KINDS[entry.manifest.mediaType];
    if (!kind) {
      skipped.push({ ref, reason: 'media-type', why: `media type ${entry.manifest.mediaType} is not one a registry serves` });
      continue;
    }
    const path = registryPath(entry.name);
    const key = `${path}:${entry.tag}`;
    const unportable = [...path.split('/'), `${entry.tag}.${kind}`].find((seg) => !isPortableFileName(seg));
    if (unportable !== undefined) {
      // the registry API names the file (no encoding a static server could undo), and a repository must stay copyable to any stick
      skipped.push({ ref, reason: 'unportable', why: `${JSON.stringify(unportable)} is not a file name FAT32, exFAT and NTFS accept (a reserved device name or a trailing dot), so it cannot be served as ${key}` });
      continue;
    }
    const clash = folded.get(key.toLowerCase());
    if (clash) {
      skipped.push({ ref, reason: 'clash', why: `${clash} is served as ${key} already` });
      continue;
    }
    folded.set(key.toLowerCase(), ref);
    tags.set(key, { entry, path, kind });
  }
  return { tags, skipped };
}

export async function readView(store: Store, signal?: AbortSignal): Promise<RegistryView | undefined> {
  const bytes = await store.readOptional(REGISTRY_VIEW_KEY, MAX_RECORD_BYTES, 'registry view', signal);
  if (!bytes) return undefined;
  try {
    const view = parseWith(ViewSchema, bytes, 'registry view');
    // its keys name files the next write removes: one that is no clean path (a damaged or forged
    // view) would fail every later push, sync and repair; such a view is rebuilt instead
    return Object.entries(view.tags).every(([key, t]) => cleanTagKey(key) && KINDS.has(t.kind)) ? view : undefined;
  } catch {
    return undefined; // rebuilt in whole by the next write
  }
}

const KINDS = new Set(Object.values(MANIFEST_KINDS));

/** `PATH:TAG` of the view: a tag after the last colon, and a path of clean segments. */
function cleanTagKey(key: string): boolean {
  const colon = key.lastIndexOf(':');
  if (colon <= 0 || colon === key.length - 1 || /[/\\\0]/.test(key.slice(colon + 1))) return false;
  return key.slice(0, colon).split('/').every((s) => s !== '' && s !== '.' && s !== '..' && !/[\\\0]/.test(s));
}

/**
 * Derived step of the write transaction: brings the registry view in line with the catalog. Writes
 * the tag files (and digest copies) of releases whose manifest changed since the view was last
 * written, removes the tag files of tags no longer served; an unreadable or missing view.json (or
 * `rebuild`, for repair) means every file is written again. Like index.json it may lag the catalog, never lead it.
 */
export async function writeRegistryView(store: Store, catalog: Catalog, signal?: AbortSignal, opts: { rebuild?: boolean } = {}): Promise<RegistryView> {
  const before = await readView(store, signal);
  const { tags, skipped } = planView(catalog);
  const view: RegistryView = { schema: 'tarport.registry-view/v1', tags: {}, skipped };
  for (const [key, t] of tags) {
    const old = before?.tags[key];
    const digest = t.entry.manifest!.digest;
    if (opts.rebuild || !old || old.digest !== digest || old.kind !== t.kind) {
      if (!(await writeTag(store, t, signal))) {
        // a sync that left out what the site already has (--have) carries no manifest object
        skipped.push({ ref: `${t.entry.name}:${t.entry.tag}`, reason: 'manifest-missing', why: `its manifest ${digest} is not in this repository (a sync with --have leaves out what the site holds)` });
        continue;
      }
      if (old && old.kind !== t.kind) await store.remove(tagFileKey(t.path, t.entry.tag, old.kind), signal);
    }
    view.tags[key] = { digest, kind: t.kind };
  }
  for (const [key, old] of Object.entries(before?.tags ?? {})) {
    if (view.tags[key]) continue;
    const colon = key.lastIndexOf(':');
    await store.remove(tagFileKey(key.slice(0, colon), key.slice(colon + 1), old.kind), signal);
  }
  const bytes = serialize(view);
  if (!before || !bytes.equals(serialize(before))) await store.putAtomic(REGISTRY_VIEW_KEY, bytes, signal);
  return view;
}

/** The digest copy first (a tag file never names a manifest the view cannot serve by digest), then the tag file. */
async function writeTag(store: Store, t: PlannedTag, signal?: AbortSignal): Promise<boolean> {
  let m: TopManifest | undefined;
  try {
    m = await topManifest(store, t.entry, signal);
  } catch (e) {
    if (isTarportError(e, 'NOT_FOUND')) return false;
    throw e;
  }
  if (!m) return false;
  // an index (multi-platform release): clients then ask for each platform's manifest by digest
  for (const child of childManifests(m)) await writeDigestCopy(store, child.digest, child.kind, await readManifestObject(store, child, signal), signal);
  await writeDigestCopy(store, m.digest, t.kind, m.bytes, signal);
  await store.putAtomic(tagFileKey(t.path, t.entry.tag, t.kind), m.bytes, signal);
  return true;
}

async function writeDigestCopy(store: Store, digest: string, kind: string, bytes: Buffer, signal?: AbortSignal): Promise<void> {
  const key = digestFileKey(digest, kind);
  if ((await store.stat(key, signal))?.size !== bytes.length) await store.putAtomic(key, bytes, signal);
}

/** The manifests an index names, with a media type a registry serves. */
function childManifests(m: TopManifest): { digest: string; size: number; kind: string }[] {
  if (MANIFEST_KINDS[m.mediaType] !== 'oci-index' && MANIFEST_KINDS[m.mediaType] !== 'docker-list') return [];
  let parsed: { manifests?: { mediaType?: string; digest?: string; size?: number }[] };
  try {
    parsed = JSON.parse(m.bytes.toString('utf8')) as typeof parsed;
  } catch {
    return []; // not JSON: the index is served as it is, and its clients find nothing more
  }
  return (parsed.manifests ?? []).flatMap((c) => {
    const kind = c.mediaType ? MANIFEST_KINDS[c.mediaType] : undefined;
    return kind && typeof c.digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(c.digest) && typeof c.size === 'number' ? [{ digest: c.digest, size: c.size, kind }] : [];
  });
}

async function readManifestObject(store: Store, desc: { digest: string; size: number }, signal?: AbortSignal): Promise<Buffer> {
  const bytes = await store.readSmall(blobKey(desc.digest), Math.min(desc.size, MAX_RECORD_BYTES), `manifest ${desc.digest}`, signal);
  if (bytes.length !== desc.size || sha256(bytes) !== desc.digest) throw new TarportError('INTEGRITY', `manifest object ${blobKey(desc.digest)} in ${store.location} does not match its digest ${desc.digest}; run 'tarport check'`);
  return bytes;
}

/** gc: the digest copies of manifests gc removed (a registry client asking for them gets a 404, as for any release gone). */
export async function removeDigestCopies(store: Store, removed: ReadonlySet<string>, dryRun: boolean, signal?: AbortSignal): Promise<string[]> {
  const out: string[] = [];
  for (const f of await store.list(REGISTRY_DIGESTS_FOLDER, signal)) {
    const m = /^([0-9a-f]{64})\.([a-z-]+)$/.exec(f.name);
    if (f.isDir || !m || !removed.has(`sha256:${m[1]}`)) continue;
    out.push(`${REGISTRY_DIGESTS_FOLDER}/${f.name}`);
    if (!dryRun) await store.remove(`${REGISTRY_DIGESTS_FOLDER}/${f.name}`, signal);
  }
  return out;
}

/** What checkRegistryView finds: files that do not match the catalog, and releases left out. */
export interface ViewFindings {
  readonly off: { what: string; problem: string }[];
  readonly skipped: { what: string; problem: string }[];
}

/**
 * check: every tag the catalog serves has its tag file holding its current manifest and the digest
 * copy beside it; releases the view leaves out are listed apart. A repository that never had a view
 * (written before tarport 0.2) gets one finding for view.json.
 */
export async function checkRegistryView(store: Store, catalog: Catalog, signal?: AbortSignal): Promise<ViewFindings> {
  const { tags, skipped } = planView(catalog);
  const found: ViewFindings = { off: [], skipped: skipped.filter((s) => s.reason !== 'no-manifest').map((s) => ({ what: s.ref, problem: `not served as a registry: ${s.why}` })) };
  if (tags.size === 0) return found;
  if (!(await readView(store, signal))) {
    found.off.push({ what: REGISTRY_VIEW_KEY, problem: "missing or unreadable: registry clients get nothing from this repository until the next publish or 'tarport repair'" });
    return found;
  }
  for (const [key, t] of tags) {
    const digest = t.entry.manifest!.digest;
    const file = tagFileKey(t.path, t.entry.tag, t.kind);
    const held = await store.readOptional(file, MAX_RECORD_BYTES, `registry tag file ${file}`, signal).catch((e: unknown) => (isTarportError(e, 'INTEGRITY') ? Buffer.alloc(0) : Promise.reject(e)));
    if (!held || sha256(held) !== digest) found.off.push({ what: file, problem: `registry clients asking for ${key} do not get the catalog's ${digest}; the next publish or 'tarport repair' rewrites it` });
    else for (const blob of await blobsNotWhole(store, held, signal)) found.skipped.push({ what: `${t.entry.name}:${t.entry.tag}`, problem: `not served as a registry: object ${blob} is stored in parts (sync --max-file-size), which a web server cannot join; sync the repository to the mirror without --max-file-size` });
    if (!(await store.stat(digestFileKey(digest, t.kind), signal))) found.off.push({ what: digestFileKey(digest, t.kind), problem: `missing: ${key} cannot be pulled by digest; 'tarport repair' writes it` });
  }
  return found;
}

/** The blobs a manifest names that are not stored as one file (objects split for FAT media). */
async function blobsNotWhole(store: Store, manifest: Buffer, signal?: AbortSignal): Promise<string[]> {
  let parsed: { config?: { digest?: unknown }; layers?: { digest?: unknown }[] };
  try {
    parsed = JSON.parse(manifest.toString('utf8')) as typeof parsed;
  } catch {
    return [];
  }
  const digests = [parsed.config?.digest, ...(parsed.layers ?? []).map((l) => l.digest)].filter((d): d is string => typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d));
  const out: string[] = [];
  // a missing object is a fault check reports already; only parts are the registry's own concern
  for (const d of digests) if (!(await store.stat(blobKey(d), signal)) && (await store.stat(partsKey(d), signal))) out.push(d);
  return out;
}
