import type { Readable } from 'node:stream';
import { TarportError } from '../../errors.js';
import { DockerClient, type DockerApi } from '../docker/client.js';
import type { ExpectedImage, ImageName, LoadPlan, Platform, Runtime } from '../types.js';

/**
 * Podman through its API service (`podman system service`), whose Docker-compatible endpoints take
 * the same calls as Docker's Engine API. Podman's `load` (containers/image's docker-archive source)
 * reads every layer a manifest.json names, so archives are complete; an image ID is the config's
 * digest, as on Docker's classic store.
 */
export class PodmanRuntime implements Runtime {
  readonly kind = 'podman' as const;
  readonly api: DockerApi;

  /** `socket`: unix:///run/podman/podman.sock (root) or $XDG_RUNTIME_DIR/podman/podman.sock (rootless). */
  constructor(socket: string | DockerApi) {
    this.api = typeof socket === 'string' ? new DockerClient(socket, { service: 'Podman API service', setting: '--podman-socket' }) : socket;
  }

  get endpoint(): string {
    return this.api.endpoint;
  }

  async platform(signal?: AbortSignal): Promise<Platform> {
    const v = await this.api.version(signal);
    if (!v.Os || !v.Arch) throw new TarportError('DAEMON', `Podman at ${this.endpoint}: GET /version names no Os/Arch`);
    return { os: v.Os, architecture: v.Arch };
  }

  async plan(): Promise<LoadPlan> {
    return { format: 'docker-save', omit: new Set(), thin: false, qualifiedNames: true };
  }

  async load(archive: Readable, _name: ImageName, signal?: AbortSignal): Promise<void> {
    await this.api.load(archive, signal);
  }

  async importRootfs(rootfs: Readable, name: ImageName, signal?: AbortSignal): Promise<string> {
    const colon = name.qualified.lastIndexOf(':');
    return this.api.import(rootfs, name.qualified.slice(0, colon), name.qualified.slice(colon + 1), signal);
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

  async removeImage(id: string, signal?: AbortSignal): Promise<boolean> {
    return this.api.removeImage(id, signal);
  }
}

/** Podman's compatible API names IDs with the sha256: prefix; its libpod API without. */
function normalId(id: string | undefined): string | undefined {
  if (id === undefined) return undefined;
  return id.startsWith('sha256:') ? id : `sha256:${id}`;
}
