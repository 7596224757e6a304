import { describe, expect, it } from 'vitest';
import { Repository } from '../../../src/repo/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { publish } from '../repo/fixtures.js';

describe('publishArchive: what it looks up to reuse', () => {
  it("looks only at stored layers the archive holds, not at every layer of every tag's current release", async () => {
    const t = new MemoryTransport();
    await publish(t, 1, 'a'); // v2: v1's layers and one of its own
    const looked: string[] = [];
    const stat = t.stat.bind(t);
    t.stat = (key: string) => {
      looked.push(key);
      return stat(key);
    };
    await publish(t, 0, 'b');
    const repo = new Repository(t);
    const layersOf = async (tag: string) => (await repo.readRecord((await repo.listReleases('demo/app', tag)).at(-1)!)).record.layers;
    const [a, b] = [await layersOf('a'), await layersOf('b')];
    const shared = a.filter((l) => b.some((m) => m.diffId === l.diffId));
    const onlyA = a.filter((l) => !shared.includes(l));
    expect(shared.length).toBeGreaterThan(0);
    expect(onlyA).toHaveLength(1);
    // the shared layers were looked up and reused; a's own layer was never asked for
    for (const l of shared) expect(looked).toContain(`blobs/sha256/${l.digest.slice(7)}`);
    expect(looked.filter((k) => k.endsWith(onlyA[0]!.digest.slice(7)))).toEqual([]);
    expect(b.find((l) => l.diffId === shared[0]!.diffId)!.digest).toBe(shared[0]!.digest);
  });
});
