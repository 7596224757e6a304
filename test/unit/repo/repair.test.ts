// src/repo/repair.ts: what `check` sends to repair, repair fixes, or says what it needs.
import { describe, expect, it } from 'vitest';
import { sha256 } from '../../../src/crypto/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { Repository, repairRepository, type Sign } from '../../../src/repo/index.js';
import { CATALOG_KEY } from '../../../src/repo/layout.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { demoArchives, faults } from './fixtures.js';

const TTL = 90 * 24 * 3600 * 1000;
const fakeSign: Sign = Object.assign(async (b: Buffer) => Buffer.from(`signature of ${sha256(b)}`), { fingerprint: 'NO KEY', verifies: async (b: Buffer, s: Buffer) => s.equals(Buffer.from(`signature of ${sha256(b)}`)) });

/** demo/app:1 and demo/app:2, pushed signed (or not) to one repository in memory. */
async function twoTags(sign?: Sign): Promise<MemoryTransport> {
  const t = new MemoryTransport();
  const [v1, v2] = await demoArchives();
  for (const [a, tag] of [[v1!, '1'], [v2!, '2']] as const) {
    await publishArchive(new Repository(t), a, { create: true, compression: 'none', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'demo/app', tag }, ...(sign ? { sign } : {}) });
  }
  return t;
}

const catalogsIn = (t: MemoryTransport) => [...t.files.keys()].filter((k) => k.startsWith('tarport/catalogs/'));
const repair = (t: MemoryTransport, sign?: Sign) => repairRepository(new Repository(t), { ttlMs: TTL, ...(sign ? { sign } : {}) });

const copiesIn = (t: MemoryTransport) => catalogsIn(t).filter((k) => k.endsWith('.json')).sort();
const sequenceOf = async (t: MemoryTransport) => (await new Repository(t).readCatalog())!.catalog.sequence;

describe('repair of a catalog.json that does not read', () => {
  it('puts back the newest copy when it reads and is current, signature and all, without the key; check is clean after', async () => {
    const t = await twoTags(fakeSign);
    const good = t.files.get(CATALOG_KEY)!;
    t.files.set(CATALOG_KEY, good.subarray(0, 40));
    expect(await faults(t)).not.toEqual([]);
    const r = await repair(t);
    expect(r.needsKey).toEqual([]);
    expect(r.repaired).toEqual([expect.stringMatching(new RegExp(`^catalog ${CATALOG_KEY} of memory://test is not valid JSON `)), `${CATALOG_KEY} put back from ${copiesIn(t).at(-1)}`]);
    expect(t.files.get(CATALOG_KEY)!.equals(good)).toBe(true);
    expect(await faults(t)).toEqual([]);
  });

  it('with no copy that reads, in a signed repository: not rebuilt unsigned without the key (listed, the file left as it is); with the key, rebuilt and signed past every sequence written', async () => {
    const t = await twoTags(fakeSign);
    const highest = copiesIn(t).length;
    for (const k of copiesIn(t)) t.files.set(k, Buffer.from('damaged'));
    t.files.set(CATALOG_KEY, Buffer.from('{"schema":'));
    const without = await repair(t);
    expect(without.repaired).toEqual([]);
    expect(without.needsKey).toEqual([
      expect.stringMatching(/^catalog tarport\/catalog\.json of memory:\/\/test is not valid JSON .*\(its releases are signed: repair with --sign-key\)$/),
      'demo/app:1: not in the catalog (its releases are signed: repair with --sign-key)',
      'demo/app:2: not in the catalog (its releases are signed: repair with --sign-key)',
    ]);
    expect(t.files.get(CATALOG_KEY)!.toString()).toBe('{"schema":');
    const withKey = await repair(t, fakeSign);
    expect(withKey.needsKey).toEqual([]);
    expect(withKey.repaired.at(-1)).toBe(`catalog rewritten at sequence ${highest + 1} (signed)`);
    const repo = new Repository(t);
    const got = (await repo.readCatalog())!;
    expect(got.catalog.releases.map((e) => `${e.name}:${e.tag}`)).toEqual(['demo/app:1', 'demo/app:2']);
    expect((await repo.readCatalogSignature(got))?.toString()).toBe(`signature of ${sha256(got.bytes)}`);
    expect(await faults(t)).toEqual([]);
  });

  it('with the newest copy damaged too and an older one behind releases/: rebuilt past the newest sequence, once (the next run finds nothing to do)', async () => {
    const t = await twoTags();
    const [, newest] = copiesIn(t);
    t.files.set(newest!, Buffer.from('damaged'));
    t.files.set(CATALOG_KEY, Buffer.from('damaged'));
    const r = await repair(t);
    expect(r.needsKey).toEqual([]);
    expect(r.repaired.at(-1)).toBe('catalog rewritten at sequence 3');
    expect(await faults(t)).toEqual([]);
    expect(await repair(t)).toEqual({ repaired: [], needsKey: [] });
  });

  it('with the newest copy damaged and an older one that is current: the older one is not put back (consumers saw the newer), a catalog is written past it', async () => {
    const t = await twoTags();
    // the second push's catalog (2) names both tags; a third catalog, the same releases, then damaged
    await new Repository(t).begin().then(async (tx) => {
      await tx.publishCatalog({ ttlMs: TTL, minSequence: 2 });
      await tx.end();
    });
    expect(copiesIn(t)).toHaveLength(3);
    t.files.set(copiesIn(t).at(-1)!, Buffer.from('damaged'));
    t.files.delete(CATALOG_KEY);
    const r = await repair(t);
    expect(r.repaired.at(-1)).toBe('catalog rewritten at sequence 4');
    expect(await sequenceOf(t)).toBe(4);
  });

  it('in a repository with nothing pushed yet, and no copy that reads: an empty catalog is written in its place', async () => {
    const t = new MemoryTransport();
    await new Repository(t).init();
    await new Repository(t).begin({ create: true }).then(async (tx) => {
      await tx.publishCatalog({ ttlMs: TTL });
      await tx.end();
    });
    for (const k of copiesIn(t)) t.files.set(k, Buffer.from('damaged'));
    t.files.set(CATALOG_KEY, Buffer.from('damaged'));
    expect(await faults(t)).not.toEqual([]);
    const r = await repair(t);
    expect(r.repaired.at(-1)).toBe('catalog rewritten at sequence 2');
    expect((await new Repository(t).readCatalog())!.catalog.releases).toEqual([]);
    expect(await faults(t)).toEqual([]);
  });

  it('with no copy that reads, in an unsigned repository: rebuilt from releases/ without a key', async () => {
    const t = await twoTags();
    for (const k of catalogsIn(t)) t.files.delete(k);
    t.files.set(CATALOG_KEY, Buffer.from('not json'));
    const r = await repair(t);
    expect(r.needsKey).toEqual([]);
    expect(r.repaired.at(-1)).toBe('catalog rewritten at sequence 1');
    expect(await faults(t)).toEqual([]);
  });
});

describe('repair of a signed repository whose catalog is not signed (an unsigned push over it, or an older repair)', () => {
  it('without the key leaves it (as check does: a mixed repository is allowed); with the key, signs the catalog again at a new sequence', async () => {
    const t = await twoTags(fakeSign);
    await new Repository(t).begin().then(async (tx) => {
      await tx.publishCatalog({ ttlMs: TTL, minSequence: 2 });
      await tx.end();
    });
    const unsigned = (await new Repository(t).readCatalog())!;
    expect(await new Repository(t).readCatalogSignature(unsigned)).toBeUndefined();
    expect(await repair(t)).toEqual({ repaired: [], needsKey: [] });
    const r = await repair(t, fakeSign);
    expect(r.repaired).toEqual(['the catalog was not signed, where the releases are', `catalog rewritten at sequence ${unsigned.catalog.sequence + 1} (signed)`]);
    const now = (await new Repository(t).readCatalog())!;
    expect((await new Repository(t).readCatalogSignature(now))?.toString()).toBe(`signature of ${sha256(now.bytes)}`);
    expect(await repair(t, fakeSign)).toEqual({ repaired: [], needsKey: [] });
  });
});
