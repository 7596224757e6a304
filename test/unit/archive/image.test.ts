import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TarArchive, readArchiveContent, type ArchiveContent, type IndexMember } from '../../../src/archive/index.js';
import { multiPlatform, tarBytes, type Item } from '../../corpus/tarwriter.js';
import { tempDir } from '../../helpers.js';

async function contentOf(items: Item[]): Promise<ArchiveContent> {
  const p = join(await tempDir(), 'a.tar');
  await writeFile(p, tarBytes(items));
  return readArchiveContent(await TarArchive.open(p));
}

const summary = (m: IndexMember) =>
  m.kind === 'image' ? `image ${[m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/')} ${m.image.configDigest}` : `${m.kind} ${m.descriptor.digest}`;

describe('image indexes: one multi-platform image per index', () => {
  it.each(['nested', 'flat'] as const)('a %s index is one index of two platform images and an attestation, not three images', async (shape) => {
    const mp = multiPlatform({ shape });
    const c = await contentOf(mp.items);
    if (c.kind !== 'images') throw new Error('expected images');
    expect(c.images).toEqual([]);
    expect(c.indexes).toHaveLength(1);
    expect(c.indexes[0]!.repoTags).toEqual(['corpus/multi:1']);
    expect(c.indexes[0]!.members.map(summary)).toEqual([`image linux/amd64 ${mp.amd64.config}`, `image linux/arm64/v8 ${mp.arm64.config}`, `artifact ${mp.attestation}`]);
  });

  it('a platform whose manifest the archive lacks is recorded as absent, not an error', async () => {
    const c = await contentOf(multiPlatform({ shape: 'nested', absent: true }).items);
    if (c.kind !== 'images') throw new Error('expected images');
    const absent = c.indexes[0]!.members.filter((m) => m.kind === 'absent');
    expect(absent).toHaveLength(1);
    expect(absent[0]!.descriptor.platform).toEqual({ os: 'linux', architecture: 's390x' });
    expect(absent[0]!.kind === 'absent' && absent[0]!.missing).toMatch(/^its manifest sha256:/);
  });

  it('a platform whose config blob is missing is absent too; the others stay images', async () => {
    const mp = multiPlatform({ shape: 'nested' });
    const items = mp.items.filter((i) => i.name !== `blobs/sha256/${mp.arm64.config.slice(7)}`);
    const c = await contentOf(items);
    if (c.kind !== 'images') throw new Error('expected images');
    expect(c.indexes[0]!.members.map((m) => m.kind)).toEqual(['image', 'absent', 'artifact']);
    const arm = c.indexes[0]!.members[1]!;
    expect(arm.kind === 'absent' && arm.missing).toBe(`its config ${mp.arm64.config}`);
  });

  it('an index member with a platform that is not a short name is refused, naming the descriptor', async () => {
    const mp = multiPlatform({ shape: 'flat' });
    const items = mp.items.map((i) => (i.name === 'index.json' ? { ...i, data: Buffer.from(i.data!.toString().replace('"s390x"', '"x"').replace('"arm64"', '"arm\\u001b[31m"')) } : i));
    await expect(contentOf(items)).rejects.toThrow(/index\.json\.manifests\[1\]: invalid platform/);
  });
});
