import { afterEach, describe, expect, it } from 'vitest';
import { detectRuntime, openRuntime } from '../../../src/cli/runtime.js';

describe('--runtime auto keeps Docker for whoever has it', () => {
  const saved = process.env.DOCKER_HOST;
  afterEach(() => {
    if (saved === undefined) delete process.env.DOCKER_HOST;
    else process.env.DOCKER_HOST = saved;
  });
  const only = (...paths: string[]) => (p: string) => paths.includes(p);

  it('DOCKER_HOST set: Docker, even with containerd beside it', () => {
    process.env.DOCKER_HOST = 'unix:///somewhere/docker.sock';
    expect(detectRuntime({}, only('/run/containerd/containerd.sock')).kind).toBe('docker');
  });

  it("Docker's socket there: Docker (Docker runs its own containerd too)", () => {
    delete process.env.DOCKER_HOST;
    expect(detectRuntime({}, only('/var/run/docker.sock', '/run/containerd/containerd.sock')).kind).toBe('docker');
  });

  it("no Docker: containerd's socket, then k3s's, then Podman's", () => {
    delete process.env.DOCKER_HOST;
    expect(detectRuntime({}, only('/run/containerd/containerd.sock'))).toEqual({ kind: 'containerd', socket: '/run/containerd/containerd.sock' });
    expect(detectRuntime({}, only('/run/k3s/containerd/containerd.sock'))).toEqual({ kind: 'containerd', socket: '/run/k3s/containerd/containerd.sock' });
    expect(detectRuntime({ podmanSocket: 'unix:///p/podman.sock' }, only('/p/podman.sock'))).toEqual({ kind: 'podman', socket: 'unix:///p/podman.sock' });
  });

  it('nothing at all: Docker, whose message a user knows', () => {
    delete process.env.DOCKER_HOST;
    expect(detectRuntime({}, only()).kind).toBe('docker');
  });

  it('a runtime or namespace that cannot be is a usage error', () => {
    expect(() => openRuntime({ runtime: 'cri-o' })).toThrow(/--runtime "cri-o": use auto, docker, containerd or podman/);
    expect(() => openRuntime({ runtime: 'containerd', namespace: 'a b' })).toThrow(/--namespace "a b"/);
  });

  it('explicit choices open the runtime asked for', () => {
    expect(openRuntime({ runtime: 'containerd', containerdSocket: '/x/c.sock', namespace: 'edge' }).endpoint).toBe('/x/c.sock (namespace edge)');
    expect(openRuntime({ runtime: 'podman', podmanSocket: '/x/p.sock' }).endpoint).toBe('unix:///x/p.sock');
    expect(openRuntime({ runtime: 'docker' }).kind).toBe('docker');
  });
});
