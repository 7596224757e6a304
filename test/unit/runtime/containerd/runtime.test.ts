// src/runtime/containerd/runtime.ts: the load plan against what containerd's content store holds.
// ctr is a script here that prints a fixed `ctr content ls -q` (the real ctr runs in
// test/integration/runtimes.test.ts).
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ContainerdRuntime } from '../../../../src/runtime/index.js';
import { tempDir } from '../../../helpers.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
// three layers: diff IDs a, b, c; their stored (compressed) objects 1, 2, 3
const layers = [
  { diffId: d('a'), digest: d('1') },
  { diffId: d('b'), digest: d('2') },
  { diffId: d('c'), digest: d('3') },
];

async function runtimeWithContent(blobs: string[]): Promise<ContainerdRuntime> {
  const dir = await tempDir();
  const socket = join(dir, 'containerd.sock');
  await writeFile(socket, '');
  const bin = join(dir, 'ctr');
  await writeFile(bin, `#!/bin/sh\nprintf '%s\\n' ${blobs.join(' ')}\n`);
  await chmod(bin, 0o755);
  return new ContainerdRuntime({ socket, namespace: 'k8s.io', ctr: bin });
}

describe('containerd load plan', () => {
  it('sends layers as stored, leaving out those whose stored blob the content store holds', async () => {
    const rt = await runtimeWithContent([d('1'), d('3'), d('f')]);
    const plan = await rt.planStored(layers);
    expect(plan.format).toBe('oci-layout-stored');
    expect([...plan.omit]).toEqual([d('a'), d('c')]);
    expect(plan.thin).toBe(true);
  });

  it('sends them uncompressed when the content store holds more of them by diff ID (loaded uncompressed before)', async () => {
    const rt = await runtimeWithContent([d('a'), d('b'), d('3')]);
    const plan = await rt.planStored(layers);
    expect(plan.format).toBe('oci-layout');
    expect([...plan.omit]).toEqual([d('a'), d('b')]);
  });

  it('plan() (encrypted layers) names layers by diff ID', async () => {
    const rt = await runtimeWithContent([d('b'), d('2')]);
    const plan = await rt.plan(layers.map((l) => l.diffId));
    expect(plan.format).toBe('oci-layout');
    expect([...plan.omit]).toEqual([d('b')]);
  });
});
