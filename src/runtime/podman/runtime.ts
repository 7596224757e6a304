import { createHash } from 'node:crypto';
import { machine } from 'node:os';
import type { Readable } from 'node:stream';
import { TarportError, messageOf } from '../../errors.js';
import { DaemonStuckError, DockerClient, RepositorySilentError, type DockerApi } from '../docker/client.js';
import { platformOfMachine, type ExpectedImage, type Fetched, type ImageName, type ImportedRootfs, type LoadPlan, type Platform, type Removal, type Runtime, type StoredLayer, type VerifiedImage, type VerifiedLoad } from '../types.js';
import { platformMade, removeUnnamed } from '../docker/runtime.js';
import { LibpodClient, type LibpodApi } from './libpod.js';
import { LoopbackRegistry, type RegistryTraffic, type ServedImage } from './registry.js';

/**
 * Podman through its API service (`podman system service`), whose Docker-compatible endpoints take
 * the same calls as Docker's Engine API. Podman's `load` reads every layer an archive's manifest
 * names, so archives are complete; an image ID is the config's digest, as on Docker's classic store.
 * The image goes in by a pull (loadVerified): Podman pulls it from a registry tarport serves on
 * 127.0.0.1 for the length of the load, from the files of its cache: no upload, no spool file, no
 * unpacking of an archive into a temporary folder. The layers are served uncompressed, each named
 * by its diff ID: containers/image decodes a compressed layer twice (once for the diff ID as it
 * stores the blob, once as it applies it), where tarport decodes it once, in its own process
 * while Podman works on the layers before; and Podman finds a layer it already has by that digest
 * (however it came in), so it asks for none of them again.
 */
export class PodmanRuntime implements Runtime {
  readonly kind = 'podman' as const;
  readonly api: DockerApi;
  readonly libpod: LibpodApi | undefined;

  /**
   * `socket`: unix:///run/podman/podman.sock (root) or $XDG_RUNTIME_DIR/podman/podman.sock
   * (rootless). With a DockerApi (tests), `libpod` is the libpod API, if any.
   */
  constructor(socket: string | DockerApi, libpod?: LibpodApi) {
    this.api = typeof socket === 'string' ? new DockerClient(socket, { service: 'Podman API service', setting: '--podman-socket' }) : socket;
    this.libpod = typeof socket === 'string' ? new LibpodClient(socket) : libpod;
  }

  get endpoint(): string {
    return this.api.endpoint;
  }

  /**
   * The host's (`uname -m`): Podman runs Linux containers of its host's architecture, and its socket
   * is a local one. Not GET /version: Podman 4.3 answers it by asking conmon and the OCI runtime for
   * their versions, 0.5 s on a quiet machine and 7 s on a busy one, a third of a 400 MiB load.
   */
  async platform(): Promise<Platform> {
    return platformOfMachine('linux', machine());
  }

  async plan(): Promise<LoadPlan> {
    return { format: 'docker-save', omit: new Set(), thin: false, qualifiedNames: true };
  }

  /**
   * Unencrypted layers go uncompressed (the pull, loadVerified; and the archive of the fallback,
   * which Podman's load takes as an OCI archive); encrypted ones in a docker save archive (plan).
   */
  async planStored(_layers: readonly StoredLayer[]): Promise<LoadPlan> {
    return { format: 'oci-layout', omit: new Set(), thin: false, qualifiedNames: true };
  }

  /**
   * Podman pulls the image from a loopback registry of tarport's that serves the verified files.
   * Not taken (the consumer uploads an archive instead, and says why) when the service is not on
   * this machine or cannot reach the registry: a remote socket, another network namespace, a
   * policy that refuses the registry, any failed pull. Podman checks each blob it pulls against the
   * manifest's digest, and the config's digest is the image ID checked after the load: a cache file
   * changed after tarport verified it cannot go in unnoticed.
   */
  async loadVerified(image: VerifiedImage, name: ImageName, signal?: AbortSignal, fetched?: Fetched): Promise<VerifiedLoad> {
    const libpod = this.libpod;
    if (!libpod?.local) return { loaded: false, reason: `the Podman API service at ${this.endpoint} is not a local socket: it cannot pull from this machine's loopback` };
    const served = servedImage(image);
    const registry = await LoopbackRegistry.start(served);
    let id: string;
    try {
      // a layer Podman asks for may wait on a download: while it moves, that is life too
      id = await libpod.pull(registry.reference, signal, () => registry.traffic.requests + registry.traffic.bytesSent + (fetched?.() ?? 0), () => registry.waitingForSource());
    } catch (e) {
      // tarport's own fault (a fetch or a decoder, as the pull read a layer, or a repository that
      // went silent under it): not the runtime's; nor is a stuck service one an upload would get past
      if (signal?.aborted || registry.traffic.fault) throw registry.traffic.fault ?? e;
      if (e instanceof DaemonStuckError || e instanceof RepositorySilentError) throw e;
      const reached = registry.traffic.requests > 0 ? `after ${registry.traffic.requests} request(s) to it` : 'which it never reached';
      const accept = registry.serverFault ? `; the registry could not take a connection (${messageOf(registry.serverFault)})` : '';
      return { loaded: false, reason: `Podman could not pull from tarport's loopback registry ${registry.host} (${reached}): ${messageOf(e)}${accept}` };
    } finally {
      await registry.close();
    }
    const untagged = await this.renameFromRegistry(libpod, id, registry, name, signal);
    return { loaded: true, manifestDigest: served.manifest.digest, via: `pulled by Podman from tarport's loopback registry (${servedSummary(image, registry.traffic)}, no upload)${untagged}` };
  }

  /**
   * The pulled image gets its name; the registry's name comes off (a failure there is only said).
   * A tag refused (a name Podman does not take) takes the registry's name off too before it fails:
   * a failed load leaves no name behind, one more each run.
   */
  private async renameFromRegistry(libpod: LibpodApi, id: string, registry: LoopbackRegistry, name: ImageName, signal?: AbortSignal): Promise<string> {
    const colon = name.qualified.lastIndexOf(':');
    try {
      await libpod.tag(id, name.qualified.slice(0, colon), name.qualified.slice(colon + 1), signal);
    } catch (e) {
      await libpod.untag(id, `${registry.host}/${registry.repository}`, 'load', signal).catch(() => undefined);
      throw e;
    }
    try {
      await libpod.untag(id, `${registry.host}/${registry.repository}`, 'load', signal);
      return '';
    } catch (e) {
      return `; the name ${registry.reference} is left on it: ${messageOf(e)}`;
    }
  }

  async load(archive: Readable, _name: ImageName, signal?: AbortSignal, fetched?: Fetched): Promise<void> {
    await this.api.load(archive, signal, fetched);
  }

  /**
   * The tag goes inside `repo`: Podman 4.3's compatible import ignores a `tag` parameter, and the
   * image got `:latest` (taken from whatever image had it) instead of the release's tag.
   */
  async importRootfs(rootfs: Readable, name: ImageName, platform: Platform, signal?: AbortSignal): Promise<ImportedRootfs> {
    // the compatible import takes the os and architecture of `platform`, never its variant
    const asked = { os: platform.os, architecture: platform.architecture };
    const imageId = await this.api.import(rootfs, name.qualified, '', signal, `${asked.os}/${asked.architecture}`);
    return { imageId, platform: await platformMade(this.api, imageId, asked, signal), asked };
  }

  async imageId(name: ImageName, signal?: AbortSignal): Promise<string | undefined> {
    return normalId((await this.api.inspectImage(name.qualified, signal))?.Id);
  }

  async verify(expected: ExpectedImage, signal?: AbortSignal): Promise<string> {
    const got = await this.api.inspectImage(expected.name.qualified, signal);
    const id = normalId(got?.Id);
    if (id !== expected.configDigest) {
      throw new TarportError('DAEMON', `${expected.name.qualified}: after the load Podman has ${id ?? 'no image'} under this name, expected ${expected.configDigest}`);
    }
    return id;
  }

  async removeImage(id: string, signal?: AbortSignal): Promise<Removal> {
    return removeUnnamed(this.api, id, signal);
  }
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';

/** The OCI manifest of a verified image, and the blobs a registry serves for it. */
export function servedImage(image: VerifiedImage): ServedImage {
  const config = { mediaType: OCI_CONFIG, digest: image.configDigest, size: image.config.length };
  const layers = image.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size }));
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const unique = new Map(image.layers.map((l) => [l.digest, { mediaType: l.mediaType, digest: l.digest, size: l.size, open: () => l.open() }]));
  return {
    manifest: { digest, size: bytes.length, mediaType: OCI_MANIFEST, bytes },
    blobs: [{ ...config, bytes: image.config }, ...unique.values()],
  };
}

/**
 * What the pull took, for the `loaded` line: bytes, and how many of the image's layers (a layer
 * Podman already had, found by its diff ID, is not asked for) in which form.
 */
export function servedSummary(image: VerifiedImage, traffic: RegistryTraffic): string {
  const layers = new Map(image.layers.map((l) => [l.digest, l]));
  const sent = [...layers.values()].filter((l) => traffic.blobsSent.has(l.digest));
  const form = sent.length > 0 && sent.every((l) => l.mediaType === OCI_LAYER_TAR) ? ' uncompressed' : '';
  return `${(traffic.bytesSent / 1048576).toFixed(1)} MiB served: ${sent.length} of ${layers.size} layer(s)${form}`;
}

/** Podman's compatible API names IDs with the sha256: prefix; its libpod API without. */
function normalId(id: string | undefined): string | undefined {
  if (id === undefined) return undefined;
  return id.startsWith('sha256:') ? id : `sha256:${id}`;
}
