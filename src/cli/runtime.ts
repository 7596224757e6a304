import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TarportError } from '../errors.js';
import { ContainerdRuntime, DockerClient, DockerRuntime, PodmanRuntime, type Runtime } from '../runtime/index.js';

/** The consumer's runtime flags (docs/cli.md). */
export interface RuntimeFlags {
  runtime?: string;
  containerdSocket?: string;
  namespace?: string;
  snapshotter?: string;
  podmanSocket?: string;
}

const DOCKER_SOCKET = '/var/run/docker.sock';
const CONTAINERD_SOCKETS = ['/run/containerd/containerd.sock', '/run/k3s/containerd/containerd.sock'];

/** Podman's service socket: root's, or the rootless one under XDG_RUNTIME_DIR. */
export function defaultPodmanSocket(): string {
  if (process.getuid?.() !== 0 && process.env.XDG_RUNTIME_DIR) return `unix://${join(process.env.XDG_RUNTIME_DIR, 'podman', 'podman.sock')}`;
  return 'unix:///run/podman/podman.sock';
}

/**
 * `auto` keeps what existing users get: Docker whenever DOCKER_HOST is set or Docker's socket
 * exists. Only on a host with neither does it look for containerd (also k3s's socket), then
 * Podman's root socket; with none of them, Docker (and Docker's message when nothing answers).
 */
export function detectRuntime(flags: RuntimeFlags, exists: (p: string) => boolean = existsSync): { kind: 'docker' | 'containerd' | 'podman'; socket?: string } {
  if (process.env.DOCKER_HOST || exists(DOCKER_SOCKET)) return { kind: 'docker' };
  const explicit = flags.containerdSocket && !CONTAINERD_SOCKETS.includes(flags.containerdSocket) ? [flags.containerdSocket] : [];
  const ctrd = [...explicit, ...CONTAINERD_SOCKETS].find(exists);
  if (ctrd) return { kind: 'containerd', socket: ctrd };
  const podman = flags.podmanSocket ?? defaultPodmanSocket();
  if (exists(podman.replace(/^unix:\/\//, ''))) return { kind: 'podman', socket: podman };
  return { kind: 'docker' };
}

export function openRuntime(flags: RuntimeFlags): Runtime {
  const want = flags.runtime ?? 'auto';
  if (!['auto', 'docker', 'containerd', 'podman'].includes(want)) throw new TarportError('USAGE', `--runtime ${JSON.stringify(want)}: use auto, docker, containerd or podman`, { flag: '--runtime' });
  const picked = want === 'auto' ? detectRuntime(flags) : { kind: want as 'docker' | 'containerd' | 'podman', socket: undefined };
  const namespace = flags.namespace ?? 'k8s.io';
  if (!/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/.test(namespace)) throw new TarportError('USAGE', `--namespace ${JSON.stringify(namespace)}: letters, digits, . _ - (containerd's namespace rule)`, { flag: '--namespace' });
  switch (picked.kind) {
    case 'docker':
      return new DockerRuntime(new DockerClient(process.env.DOCKER_HOST));
    case 'containerd':
      return new ContainerdRuntime({
        socket: (picked.socket ?? flags.containerdSocket ?? CONTAINERD_SOCKETS[0]!).replace(/^unix:\/\//, ''),
        namespace,
        ...(flags.snapshotter ? { snapshotter: flags.snapshotter } : {}),
      });
    case 'podman': {
      const socket = picked.socket ?? flags.podmanSocket ?? defaultPodmanSocket();
      return new PodmanRuntime(socket.startsWith('/') ? `unix://${socket}` : socket);
    }
  }
}
