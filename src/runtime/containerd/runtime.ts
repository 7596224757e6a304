import type { Readable } from 'node:stream';
import { TarportError } from '../../errors.js';
import type { ExpectedImage, ImageName, ImportedRootfs, LoadPlan, Platform, Removal, Runtime, StoredLayer } from '../types.js';
import { ctr, type CtrOptions } from './ctr.js';

/** One row of `ctr images ls`: the name and the digest of its target (the image ID tarport records). */
interface ImageRow {
  readonly name: string;
  readonly digest: string;
}

/**
 * containerd directly, driven through its own client `ctr` (shipped with every containerd): no
 * gRPC code generation, and what tarport does is what an operator would type. Loads are OCI image
 * layouts; any layer whose blob the content store holds for an image is left out of the archive, and
 * containerd's importer takes the manifest's other blobs from the content store (measured with
 * containerd 1.6, docs/consumer.md). Unencrypted layers go as the repository stores them
 * (compressed, as a registry pull would bring them): containerd decompresses them as it unpacks,
 * and a third fewer bytes pass through ctr into its content store than uncompressed (bench:
 * `ctr images import` of the zstd layout took 0.6x the time of the `docker save` archive).
 * Encrypted layers go uncompressed, named by diff ID.
 */
export class ContainerdRuntime implements Runtime {
  readonly kind = 'containerd' as const;

  constructor(private readonly o: CtrOptions) {}

  get endpoint(): string {
    return `${this.o.socket} (namespace ${this.o.namespace})`;
  }

  /** The platform of containerd's runtime plugin (`ctr plugins ls`: linux/amd64, linux/arm64/v8). */
  async platform(signal?: AbortSignal): Promise<Platform> {
    const rows = (await ctr(this.o, ['plugins', 'ls'], { signal })).split('\n').slice(1).map((l) => l.trim().split(/\s+/));
    const withPlatform = rows.filter((r) => r.length >= 4 && r[2] !== '-' && r[2]!.includes('/'));
    const row = withPlatform.find((r) => r[0]!.startsWith('io.containerd.runtime')) ?? withPlatform[0];
    if (!row) throw new TarportError('DAEMON', `containerd at ${this.endpoint}: ctr plugins ls names no platform`);
    return parsePlatform(row[2]!.split(',')[0]!);
  }

  async plan(diffIds: readonly string[], signal?: AbortSignal): Promise<LoadPlan> {
    const have = await this.content(signal);
    return { format: 'oci-layout', omit: new Set(diffIds.filter((d) => have.has(d))), thin: true, qualifiedNames: true };
  }

  /**
   * Layers as stored, leaving out those whose stored blob the content store holds; but where it
   * holds more of them uncompressed (loaded by tarport before it sent stored layers, or imported
   * from a `docker save` archive), the uncompressed plan, so that nothing it has is sent again.
   */
  async planStored(layers: readonly StoredLayer[], signal?: AbortSignal): Promise<LoadPlan> {
    const have = await this.content(signal);
    const byStored = new Set(layers.filter((l) => have.has(l.digest)).map((l) => l.diffId));
    const byDiffId = new Set(layers.filter((l) => have.has(l.diffId)).map((l) => l.diffId));
    if (byDiffId.size > byStored.size) return { format: 'oci-layout', omit: byDiffId, thin: true, qualifiedNames: true };
    return { format: 'oci-layout-stored', omit: byStored, thin: true, qualifiedNames: true };
  }

  /**
   * The digests of the blobs in the namespace's content store that containerd keeps: those an
   * image reaches. A blob nothing references (written by an import that failed, or left by an image
   * removed a moment ago) stays only until containerd's next garbage collection, which may come
   * while the load runs: an archive that left it out would fail its import for a layer that is gone.
   */
  private async content(signal?: AbortSignal): Promise<Set<string>> {
    const [images, listing] = await Promise.all([this.images(signal), ctr(this.o, ['content', 'ls'], { signal })]);
    return reachableBlobs(images.map((i) => i.digest), listing);
  }

  async load(archive: Readable, _name: ImageName, signal?: AbortSignal): Promise<void> {
    await ctr(this.o, ['images', 'import', ...(this.o.snapshotter ? ['--snapshotter', this.o.snapshotter] : []), '-'], { input: archive, signal });
  }

  /**
   * containerd has no import of a root file system: the consumer hands it an OCI layout of one
   * layer whose config names `platform` (see consumer/pull.ts), so this is a load.
   */
  async importRootfs(rootfs: Readable, name: ImageName, platform: Platform, signal?: AbortSignal): Promise<ImportedRootfs> {
    await this.load(rootfs, name, signal);
    const id = await this.imageId(name, signal);
    if (!id) throw new TarportError('DAEMON', `${name.qualified}: containerd at ${this.endpoint} has no such image after the import`);
    return { imageId: id, platform };
  }

  private async images(signal?: AbortSignal): Promise<ImageRow[]> {
    const lines = (await ctr(this.o, ['images', 'ls'], { signal })).split('\n').slice(1);
    return lines.map((l) => l.trim().split(/\s+/)).filter((c) => c.length >= 3 && c[2]!.startsWith('sha256:')).map((c) => ({ name: c[0]!, digest: c[2]! }));
  }

  async imageId(name: ImageName, signal?: AbortSignal): Promise<string | undefined> {
    return (await this.images(signal)).find((r) => r.name === name.qualified)?.digest;
  }

  /**
   * The name points at the manifest the load archive carried (content-addressed: it names the
   * release's config and layers) or, without one, at a manifest whose config is the release's; every
   * blob is there, and it is unpacked.
   */
  async verify(expected: ExpectedImage, signal?: AbortSignal): Promise<string> {
    const ref = expected.name.qualified;
    // `ctr images check`: REF TYPE DIGEST STATUS SIZE UNPACKED, STATUS "complete (n/n)"
    const row = (await ctr(this.o, ['images', 'check', `name==${ref}`], { signal })).split('\n').slice(1).find((l) => l.startsWith(ref + ' '));
    const cols = row?.trim().split(/\s+/) ?? [];
    const id = cols[2];
    if (!row || !id?.startsWith('sha256:')) throw new TarportError('DAEMON', `${ref}: after the import containerd at ${this.endpoint} has no image under this name`);
    if (expected.manifestDigest !== undefined && id !== expected.manifestDigest) {
      throw new TarportError('DAEMON', `${ref}: after the import containerd's name points at ${id}, not at the manifest ${expected.manifestDigest} that was imported`);
    }
    if (expected.manifestDigest === undefined) {
      const manifest = JSON.parse(await ctr(this.o, ['content', 'get', id], { signal })) as { config?: { digest?: string } };
      if (manifest.config?.digest !== expected.configDigest) {
        throw new TarportError('DAEMON', `${ref}: after the import containerd's image ${id} has config ${manifest.config?.digest ?? 'none'}, expected ${expected.configDigest}`);
      }
    }
    if (!row || !row.includes(' complete ')) throw new TarportError('DAEMON', `${ref}: containerd at ${this.endpoint} says its content is incomplete: ${row?.trim() ?? 'not listed by ctr images check'}`);
    if (cols.at(-1) !== 'true') throw new TarportError('DAEMON', `${ref}: containerd at ${this.endpoint} holds the image but did not unpack it (${row.trim()})`);
    return id;
  }

  /**
   * containerd's images are names: an earlier image no name points at any longer is already gone
   * (its content is collected), and one a name still points at is kept for that name.
   */
  async removeImage(id: string, signal?: AbortSignal): Promise<Removal> {
    const names = (await this.images(signal)).filter((r) => r.digest === id).map((r) => r.name);
    return names.length === 0 ? { removed: false } : { removed: false, namedAs: names };
  }
}

const DIGEST = /^[a-z0-9]+:[0-9a-f]{32,}$/;
/** A label that makes containerd's collector follow a reference to content (manifest → layers). */
const CONTENT_REF = /(?:^|[\s,])containerd\.io\/gc\.ref\.content(?:\.[^=,\s]*)?=([a-z0-9]+:[0-9a-f]{32,})/g;
/** A label that makes a blob a root of its own. */
const GC_ROOT = /(?:^|[\s,])containerd\.io\/gc\.root=/;

/**
 * What containerd's garbage collector keeps of a `ctr content ls` listing (DIGEST SIZE AGE LABELS):
 * the blobs reached from the images' targets and from blobs labelled as roots, through the
 * `containerd.io/gc.ref.content.*` labels it follows (an index names its manifests, a manifest its
 * config and layers). Leases protect content too, but ctr does not list what they hold: a blob held
 * only by a lease counts as absent, which costs its bytes, never a failed import.
 */
export function reachableBlobs(roots: readonly string[], listing: string): Set<string> {
  const refs = new Map<string, string[]>();
  const todo = [...roots];
  for (const line of listing.split('\n').slice(1)) {
    const digest = line.trim().split(/\s+/)[0] ?? '';
    if (!DIGEST.test(digest)) continue;
    refs.set(digest, [...line.matchAll(CONTENT_REF)].map((m) => m[1]!));
    if (GC_ROOT.test(line)) todo.push(digest);
  }
  const kept = new Set<string>();
  for (let d = todo.pop(); d !== undefined; d = todo.pop()) {
    if (kept.has(d) || !refs.has(d)) continue;
    kept.add(d);
    todo.push(...refs.get(d)!);
  }
  return kept;
}

export function parsePlatform(s: string): Platform {
  const [os, architecture, variant] = s.split('/');
  if (!os || !architecture) throw new TarportError('DAEMON', `not a platform: ${JSON.stringify(s)}`);
  return { os, architecture, ...(variant ? { variant } : {}) };
}
