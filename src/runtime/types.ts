import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';

/** The runtimes tarport loads into; `auto` picks Docker as before (see cli/runtime). */
export type RuntimeKind = 'docker' | 'containerd' | 'podman';

/** An OCI platform as the runtime reports it (GOOS/GOARCH names, e.g. linux/arm64/v8). */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, ...(p.variant ? [p.variant] : [])].join('/');
}

/**
 * The archive shape a runtime's load accepts: `docker-save` is the legacy `docker save` layout
 * (manifest.json), `oci-layout` an OCI image layout (index.json, blobs/sha256/) of uncompressed
 * layers, `oci-layout-stored` one whose layers are the repository's objects as stored (compressed:
 * the runtime decompresses them as it unpacks, and fewer bytes cross to it).
 */
export type LoadFormat = 'docker-save' | 'oci-layout' | 'oci-layout-stored';
/** A layer as the repository stores it, unencrypted: its diff ID and the stored object's digest. */
export interface StoredLayer {
  readonly diffId: string;
  readonly digest: string;
}

/**
 * A layer as the runtime reads it from tarport during loadVerified: `digest` and `size` of the
 * bytes open() gives (the stored object's, or the uncompressed layer's: its diff ID), which come
 * from objects the consumer checked against their digests (its cache), decompressed on the way or
 * as stored. open() waits for the object's fetch, and fails when that failed.
 */
export interface VerifiedBlob {
  readonly digest: string;
  readonly size: number;
  /** The OCI media type of these bytes (e.g. application/vnd.oci.image.layer.v1.tar+zstd). */
  readonly mediaType: string;
  open(): Promise<LayerStream>;
}

/**
 * A layer's bytes, decompressed on the way or not. `release`, where there is one, takes back a
 * chunk the reader is done with (written out whole: nothing holds a view of it any more) for the
 * decompressor's next output: fresh megabytes cost the CPU of a second zstd (page faults), a
 * released one none. A chunk not released is simply collected.
 */
export type LayerStream = Readable & { readonly release?: (chunk: Buffer) => void };

/** An image whose config tarport checked and whose layers come from verified objects. */
export interface VerifiedImage {
  readonly config: Buffer;
  readonly configDigest: string;
  /** In the config's order; a layer that repeats is served once. */
  readonly layers: readonly VerifiedBlob[];
}

/** How loadVerified went: loaded (and how), or not tried through to the end and why (nothing loaded). */
export type VerifiedLoad = { readonly loaded: true; readonly manifestDigest: string; readonly via: string } | { readonly loaded: false; readonly reason: string };

/** How the consumer builds the load archive of one image for this runtime. */
export interface LoadPlan {
  readonly format: LoadFormat;
  /** Diff IDs whose layer the archive may leave out: the runtime has them already. */
  readonly omit: ReadonlySet<string>;
  /**
   * True when the runtime can take thin archives (it keeps what it loaded and reuses it): the
   * consumer's cache then need not keep layers. False: every load carries every layer, so the
   * cache keeps them, and an update need not fetch them again.
   */
  readonly thin: boolean;
  /**
   * True when the archive must name the image in the qualified form: Podman reads a familiar
   * `team/app:1` in a docker-save archive as `localhost/team/app:1`, another image than Docker's.
   */
  readonly qualifiedNames: boolean;
}

/**
 * One image name in both of Docker's spellings: `familiar` (`app:1`, `team/app:1`, what Docker
 * shows and the repository stores) and `qualified` (`docker.io/library/app:1`, what containerd,
 * kubelet and Podman store).
 */
export interface ImageName {
  readonly familiar: string;
  readonly qualified: string;
}

/** What the consumer expects to find after a load. */
export interface ExpectedImage {
  readonly name: ImageName;
  /** The config digest: the image ID on Docker's classic store and Podman. */
  readonly configDigest: string;
  readonly diffIds: readonly string[];
  /** The digest of the manifest an OCI-layout load archive carried (it names the config and layers). */
  readonly manifestDigest?: string;
}

/**
 * Bytes the layers behind a load have downloaded so far: while it moves, a load that waits for its
 * own bytes is waiting on the repository, not stuck in the runtime (docker/client.ts, idleBound).
 */
export type Fetched = () => number;

/**
 * The local container runtime, one implementation per folder (docker/, containerd/, podman/).
 * The consumer talks to this interface only.
 */
export interface Runtime {
  readonly kind: RuntimeKind;
  /** Where it answers (a socket or URL), for messages. */
  readonly endpoint: string;
  /** The platform images must be built for to run here. */
  platform(signal?: AbortSignal): Promise<Platform>;
  /** Which layers an archive of an image with these diff IDs may leave out, and in which shape. */
  plan(diffIds: readonly string[], signal?: AbortSignal): Promise<LoadPlan>;
  /**
   * Optional, for a runtime that can take layers as the repository stores them: the plan for an
   * image whose layers are all unencrypted (`omit` still names diff IDs). The consumer asks this
   * instead of plan() when the runtime has it and no layer is encrypted.
   */
  planStored?(layers: readonly StoredLayer[], signal?: AbortSignal): Promise<LoadPlan>;
  /**
   * Optional, for a runtime that can fetch the layers from tarport itself (Podman, pulling from a
   * loopback registry): loads the image with no archive upload in between. Resolves
   * `loaded: false` with a reason when the runtime could not take this path (the consumer then
   * loads an archive as planned and says why); throws when the runtime refused the image.
   */
  loadVerified?(image: VerifiedImage, name: ImageName, signal?: AbortSignal, fetched?: Fetched): Promise<VerifiedLoad>;
  /** Loads an archive of the planned shape that holds the image `name`. */
  load(archive: Readable, name: ImageName, signal?: AbortSignal, fetched?: Fetched): Promise<void>;
  /**
   * Imports a root file system tar under `name` as an image for `platform` (the tar names none);
   * returns the image ID and the platform the runtime made it for, as far as it takes `platform`.
   */
  importRootfs(rootfs: Readable, name: ImageName, platform: Platform, signal?: AbortSignal): Promise<ImportedRootfs>;
  /** The ID of the image under `name`, or undefined when there is none. */
  imageId(name: ImageName, signal?: AbortSignal): Promise<string | undefined>;
  /**
   * Checks that the image arrived whole: it exists under its name, its config is the expected one,
   * and it is usable (unpacked). Throws a DAEMON error naming what is wrong; returns the image ID.
   */
  verify(expected: ExpectedImage, signal?: AbortSignal): Promise<string>;
  /**
   * Removes an earlier image by ID (retention), unless it still carries a name: a tag the user gave
   * it, or another tag of the same release, is not tarport's to take away (the daemon would delete
   * an image with one name left along with that name).
   */
  removeImage(id: string, signal?: AbortSignal): Promise<Removal>;
}

/** The image a root file system became. */
export interface ImportedRootfs {
  readonly imageId: string;
  /** The platform of the image made, as the runtime reports it. */
  readonly platform: Platform;
  /** What the runtime was asked for, where it takes less than the platform given (Podman: no variant). */
  readonly asked?: Platform;
}

/** What became of an earlier image retention asked to remove. */
export interface Removal {
  readonly removed: boolean;
  /** The names it still carries, when it was kept for them (none: it was not there). */
  readonly namedAs?: readonly string[];
}

/** The chain ID of each prefix of a list of diff IDs (OCI image spec). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? d : 'sha256:' + createHash('sha256').update(`${prev} ${d}`).digest('hex'));
  }
  return out;
}

/** GOARCH and variant from a kernel's machine name (uname -m), for runtimes that report only that. */
export function platformOfMachine(os: string, machine: string): Platform {
  const m = machine.toLowerCase();
  const table: Record<string, [string, string?]> = {
    x86_64: ['amd64'], amd64: ['amd64'], aarch64: ['arm64', 'v8'], arm64: ['arm64', 'v8'],
    armv7l: ['arm', 'v7'], armv6l: ['arm', 'v6'], armv5tel: ['arm', 'v5'], i386: ['386'], i686: ['386'],
    ppc64le: ['ppc64le'], s390x: ['s390x'], riscv64: ['riscv64'], mips64: ['mips64'], loongarch64: ['loong64'],
  };
  const [architecture, variant] = table[m] ?? [m];
  return { os: os.toLowerCase(), architecture, ...(variant ? { variant } : {}) };
}
