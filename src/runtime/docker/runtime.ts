import type { Readable } from 'node:stream';
import { TarportError } from '../../errors.js';
import { chainIds, formatPlatform, platformOfMachine, type ExpectedImage, type Fetched, type ImageName, type ImportedRootfs, type LoadPlan, type Platform, type Removal, type Runtime } from '../types.js';
import type { DockerApi, ImageInspect, ImageStore } from './client.js';

/**
 * Docker, either image store. The classic (graphdriver) store takes thin archives: layers whose
 * chain ID it has may be left out (moby's partial load). The containerd image store (the default of
 * fresh Docker 29 installs) needs every layer in a `docker load` archive, and there an image ID is
 * the manifest's digest, not the config's.
 */
export class DockerRuntime implements Runtime {
  readonly kind = 'docker' as const;
  private store: ImageStore | undefined;

  /** `imageStore` overrides the daemon's own answer (tests of the containerd-store path). */
  constructor(readonly api: DockerApi, opts: { imageStore?: ImageStore } = {}) {
    this.store = opts.imageStore;
  }

  get endpoint(): string {
    return this.api.endpoint;
  }

  async imageStore(signal?: AbortSignal): Promise<ImageStore> {
    return (this.store ??= await this.api.imageStore(signal));
  }

  async platform(signal?: AbortSignal): Promise<Platform> {
    const v = await this.api.version(signal);
    if (!v.Os || !v.Arch) throw new TarportError('DAEMON', `${this.endpoint}: GET /version names no Os/Arch`);
    // /version gives GOARCH (amd64, arm64, arm); the variant of arm only the kernel's name tells
    return v.Arch === 'arm' || v.Arch === 'arm64' ? platformOfMachine(v.Os, v.Arch === 'arm' ? 'armv7l' : 'aarch64') : { os: v.Os, architecture: v.Arch };
  }

  async plan(diffIds: readonly string[], signal?: AbortSignal): Promise<LoadPlan> {
    if ((await this.imageStore(signal)) === 'containerd') return { format: 'docker-save', omit: new Set(), thin: false, qualifiedNames: false };
    // on the classic store a prefix of layers whose chains exist may be left out
    const have = await this.api.layerChainIds(signal);
    const chains = chainIds(diffIds);
    let skip = 0;
    while (skip < chains.length && have.has(chains[skip]!)) skip++;
    // the archive names layer files by diff ID: one the prefix shares with a later, new chain (an
    // empty layer twice, as Podman and Buildah builds make) must be there for that one
    const later = new Set(diffIds.slice(skip));
    return { format: 'docker-save', omit: new Set(diffIds.slice(0, skip).filter((d) => !later.has(d))), thin: true, qualifiedNames: false };
  }

  async load(archive: Readable, name: ImageName, signal?: AbortSignal, fetched?: Fetched): Promise<void> {
    const lines = await this.api.load(archive, signal, fetched);
    // Docker 27.2+ on the containerd store: an image that imported but failed to unpack is reported
    // in the progress stream ("Error unpacking image NAME: …") with status 200 (moby
    // daemon/containerd/image_exporter.go); 25.0-27.1 failed the call itself.
    const unpack = lines.find((l) => l.startsWith('Error unpacking image'));
    if (unpack) throw new TarportError('DAEMON', `docker load of ${name.familiar} into ${this.endpoint}: the daemon imported the image but could not unpack it (${unpack})`);
  }

  /**
   * Asks the daemon to make the image for `platform` (the `platform` of POST /images/create, API
   * 1.32+), and says what it made: Docker 20.10 takes the parameter only with its experimental
   * features on, and otherwise makes an image of its own platform without a word.
   */
  async importRootfs(rootfs: Readable, name: ImageName, platform: Platform, signal?: AbortSignal): Promise<ImportedRootfs> {
    const colon = name.familiar.lastIndexOf(':');
    const imageId = await this.api.import(rootfs, name.familiar.slice(0, colon), name.familiar.slice(colon + 1), signal, formatPlatform(platform));
    return { imageId, platform: await platformMade(this.api, imageId, platform, signal) };
  }

  async imageId(name: ImageName, signal?: AbortSignal): Promise<string | undefined> {
    return (await this.api.inspectImage(name.familiar, signal))?.Id;
  }

  async verify(expected: ExpectedImage, signal?: AbortSignal): Promise<string> {
    const ref = expected.name.familiar;
    if ((await this.imageStore(signal)) === 'graphdriver') {
      const got = await this.api.inspectImage(ref, signal);
      if (got?.Id !== expected.configDigest) {
        throw new TarportError('DAEMON', `${ref}: after the load the daemon has ${got?.Id ?? 'no image'} under this tag, expected ${expected.configDigest}`);
      }
      return got.Id;
    }
    const got = await this.api.inspectImage(ref, signal, { manifests: true });
    if (!got) throw new TarportError('DAEMON', `${ref}: after the load the daemon (containerd image store) has no image under this tag`);
    checkContainerdStoreImage(ref, got, expected, await this.platform(signal));
    return got.Id;
  }

  async removeImage(id: string, signal?: AbortSignal): Promise<Removal> {
    return removeUnnamed(this.api, id, signal);
  }
}

/** The platform of an image the Docker API (Docker's, Podman's) made; `asked` where it says none. */
export async function platformMade(api: DockerApi, id: string, asked: Platform, signal?: AbortSignal): Promise<Platform> {
  const got = await api.inspectImage(id, signal);
  if (!got?.Os || !got.Architecture) return asked;
  return { os: got.Os, architecture: got.Architecture, ...(got.Variant ? { variant: got.Variant } : {}) };
}

/**
 * Removes an image through the Docker API (Docker's, Podman's) only while no name is left on it:
 * a DELETE by ID of an image with one tag left deletes the image and that tag with it.
 */
export async function removeUnnamed(api: DockerApi, id: string, signal?: AbortSignal): Promise<Removal> {
  const got = await api.inspectImage(id, signal);
  if (!got) return { removed: false };
  const namedAs = (got.RepoTags ?? []).filter((t) => t !== '<none>:<none>');
  if (namedAs.length > 0) return { removed: false, namedAs };
  return { removed: await api.removeImage(id, signal) };
}

/**
 * On the containerd store the ID is the manifest's digest, so the config is checked through what
 * inspect derives from it (RootFS.Layers, the diff IDs); with API 1.48+ (Docker 28.0+) the
 * `Manifests` list also says whether the content is all there (`Available`) and unpacked
 * (`ImageData.Size.Unpacked`) for this daemon's platform.
 */
export function checkContainerdStoreImage(ref: string, got: ImageInspect, expected: ExpectedImage, platform: Platform): void {
  const layers = got.RootFS?.Layers ?? [];
  if (layers.length !== expected.diffIds.length || layers.some((d, i) => d !== expected.diffIds[i])) {
    throw new TarportError('DAEMON', `${ref}: after the load the daemon's image ${got.Id} has other layers (${layers.length}) than the release (${expected.diffIds.length}): another image holds the tag`);
  }
  if (!got.Manifests) return; // API before 1.48: the load's own answer is all there is
  const images = got.Manifests.filter((m) => m.Kind === 'image');
  const mine = images.find((m) => m.ImageData?.Platform?.os === platform.os && m.ImageData.Platform.architecture === platform.architecture) ?? (images.length === 1 ? images[0] : undefined);
  if (!mine) throw new TarportError('DAEMON', `${ref}: after the load the daemon lists no image manifest for ${formatPlatform(platform)}`);
  if (!mine.Available) throw new TarportError('DAEMON', `${ref}: after the load the daemon says content of manifest ${mine.ID} is missing (Available: false)`);
  if (!((mine.ImageData?.Size?.Unpacked ?? 0) > 0)) throw new TarportError('DAEMON', `${ref}: after the load manifest ${mine.ID} is not unpacked (Size.Unpacked 0): the daemon cannot run it`);
}
