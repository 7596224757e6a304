// src/runtime/containerd/runtime.ts: the load plan against what containerd's content store holds.
// ctr is a script here that prints a fixed `ctr images ls` and `ctr content ls` (the real ctr runs
// in test/integration/runtimes.test.ts).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ContainerdRuntime } from '../../../../src/runtime/index.js';
import { reachableBlobs } from '../../../../src/runtime/containerd/runtime.js';
import { tempDir, writeScript } from '../../../helpers.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
// three layers: diff IDs a, b, c; their stored (compressed) objects 1, 2, 3
const layers = [
  { diffId: d('a'), digest: d('1') },
  { diffId: d('b'), digest: d('2') },
  { diffId: d('c'), digest: d('3') },
];

/** `ctr content ls` as containerd 1.6 prints it: a blob and the labels the collector reads. */
function listing(blobs: Record<string, string[]>): string {
  const rows = Object.entries(blobs).map(([digest, labels]) => `${digest}\t1.108MB\tLess than a second\t${labels.join(',') || '-'}`);
  return ['DIGEST\t\t\t\t\t\t\t\t\tSIZE\tAGE\t\t\tLABELS', ...rows].join('\n') + '\n';
}
const layerRefs = (digests: string[]) => digests.map((x, i) => `containerd.io/gc.ref.content.l.${i}=${x}`);

/** A content store holding `blobs` for one image, whose manifest (m) names them, and `loose` blobs nothing names. */
async function runtimeWithContent(blobs: string[], loose: string[] = []): Promise<ContainerdRuntime> {
  const dir = await tempDir();
  const socket = join(dir, 'containerd.sock');
  await writeFile(socket, '');
  const content = listing({
    [d('9')]: [`containerd.io/gc.ref.content.config=${d('8')}`, ...layerRefs(blobs)],
    [d('8')]: [],
    ...Object.fromEntries([...blobs, ...loose].map((b) => [b, [`containerd.io/uncompressed=${d('e')}`]])),
  });
  await writeFile(join(dir, 'content.txt'), content);
  await writeFile(join(dir, 'images.txt'), `REF TYPE DIGEST SIZE PLATFORMS LABELS\ndocker.io/team/app:1 application/vnd.oci.image.manifest.v1+json ${d('9')} 13.1 MiB linux/amd64 -\n`);
  const bin = join(dir, 'ctr');
  // ctr -a SOCKET -n NAMESPACE images|content ls
  writeScript(bin, `#!/bin/sh\ncase "$5" in images) cat '${dir}/images.txt' ;; content) cat '${dir}/content.txt' ;; *) exit 1 ;; esac\n`);
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

  it('leaves in the layers whose blob nothing references (containerd may collect them while the load runs)', async () => {
    const rt = await runtimeWithContent([d('1')], [d('2'), d('b')]);
    const plan = await rt.planStored(layers);
    expect(plan.format).toBe('oci-layout-stored');
    expect([...plan.omit]).toEqual([d('a')]);
  });
});

describe('reachableBlobs: what containerd\'s garbage collector keeps', () => {
  it('follows an index to its manifests and a manifest to its config and layers, from the images\' targets', () => {
    const text = listing({
      [d('0')]: [`containerd.io/gc.ref.content.m.0=${d('9')}`, `containerd.io/gc.ref.content.m.1=${d('7')}`],
      [d('9')]: [`containerd.io/gc.ref.content.config=${d('8')}`, ...layerRefs([d('1'), d('2')])],
      [d('7')]: layerRefs([d('3')]),
      [d('8')]: [],
      [d('1')]: [`containerd.io/uncompressed=${d('a')}`],
      [d('2')]: [],
      [d('3')]: [],
      [d('4')]: [],
    });
    expect([...reachableBlobs([d('0')], text)].sort()).toEqual([d('0'), d('1'), d('2'), d('3'), d('7'), d('8'), d('9')]);
    expect([...reachableBlobs([d('7')], text)].sort()).toEqual([d('3'), d('7')]);
  });

  it('keeps a blob labelled a root and what it names; a reference to a blob the store lacks is not there', () => {
    const text = listing({
      [d('5')]: ['containerd.io/gc.root=2026-12-03T01:00:00Z', ...layerRefs([d('6'), d('f')])],
      [d('6')]: [],
      [d('4')]: [],
    });
    expect([...reachableBlobs([d('c')], text)].sort()).toEqual([d('5'), d('6')]);
  });

  it('counts nothing from a listing with no images and no roots', () => {
    expect(reachableBlobs([], listing({ [d('1')]: [], [d('2')]: [`containerd.io/uncompressed=${d('a')}`] })).size).toBe(0);
  });
});
