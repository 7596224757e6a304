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

describe('repair of a catalog.json that does not read', () => {
  it('puts back the newest copy that reads, signature and all, without the key; check is clean after', async () => {
    const t = await twoTags(fakeSign);
    const good = t.files.get(CATALOG_KEY)!;
    t.files.set(CATALOG_KEY, good.subarray(0, 40));
    expect(await faults(t)).not.toEqual([]);
    const r = await repair(t);
    const newest = catalogsIn(t).filter((k) => k.endsWith('.json')).sort().at(-1)!;
    expect(r.needsKey).toEqual([]);
    expect(r.repaired).toEqual([expect.stringMatching(new RegExp(`^${CATALOG_KEY} does not read \\(catalog ${CATALOG_KEY} of memory://test is not valid JSON .*\\): ${newest} does$`)), `${CATALOG_KEY} put back from ${newest}`]);
    expect(t.files.get(CATALOG_KEY)!.equals(good)).toBe(true);
    expect(await faults(t)).toEqual([]);
  });

  it('with no copy that reads, in a signed repository: not rebuilt unsigned without the key (listed, the file left as it is); with the key, rebuilt and signed', async () => {
    const t = await twoTags(fakeSign);
    for (const k of catalogsIn(t)) t.files.delete(k);
    t.files.set(CATALOG_KEY, Buffer.from('{"schema":'));
    const without = await repair(t);
    expect(without.needsKey).toEqual(['demo/app:1: not in the catalog (its releases are signed: repair with --sign-key)', 'demo/app:2: not in the catalog (its releases are signed: repair with --sign-key)']);
    expect(t.files.get(CATALOG_KEY)!.toString()).toBe('{"schema":');
    const withKey = await repair(t, fakeSign);
    expect(withKey.needsKey).toEqual([]);
    expect(withKey.repaired.at(-1)).toMatch(/^catalog rewritten at sequence \d+ \(signed\)$/);
    const repo = new Repository(t);
    const got = (await repo.readCatalog())!;
    expect(got.catalog.releases.map((e) => `${e.name}:${e.tag}`)).toEqual(['demo/app:1', 'demo/app:2']);
    expect((await repo.readCatalogSignature(got))?.toString()).toBe(`signature of ${sha256(got.bytes)}`);
    expect(await faults(t)).toEqual([]);
  });

  it('with no copy that reads, in an unsigned repository: rebuilt from releases/ without a key', async () => {
    const t = await twoTags();
    for (const k of catalogsIn(t)) t.files.delete(k);
    t.files.set(CATALOG_KEY, Buffer.from('not json'));
    const r = await repair(t);
    expect(r.needsKey).toEqual([]);
    expect(r.repaired.at(-1)).toMatch(/^catalog rewritten at sequence \d+$/);
    expect(await faults(t)).toEqual([]);
  });
});

describe('repair of a signed repository whose catalog lost its signature (rebuilt unsigned, its history gone)', () => {
  it('says it needs the key; with the key, signs the catalog again at a new sequence', async () => {
    const t = await twoTags(fakeSign);
    for (const k of catalogsIn(t)) t.files.delete(k);
    t.files.delete(CATALOG_KEY);
    // what an older repair did without the key: an unsigned catalog over signed releases
    expect((await repair(t)).needsKey).toHaveLength(2);
    await new Repository(t).begin().then(async (tx) => {
      await tx.publishCatalog({ ttlMs: TTL });
      await tx.end();
    });
    const unsigned = (await new Repository(t).readCatalog())!;
    expect(await new Repository(t).readCatalogSignature(unsigned)).toBeUndefined();
    expect((await repair(t)).needsKey).toEqual(['the catalog is not signed, where its releases are (a consumer that pins keys refuses it): repair with --sign-key']);
    const r = await repair(t, fakeSign);
    expect(r.repaired).toEqual(['the catalog was not signed, where the releases are', `catalog rewritten at sequence ${unsigned.catalog.sequence + 1} (signed)`]);
    const now = (await new Repository(t).readCatalog())!;
    expect((await new Repository(t).readCatalogSignature(now))?.toString()).toBe(`signature of ${sha256(now.bytes)}`);
    // and once signed, nothing more to do
    expect(await repair(t, fakeSign)).toEqual({ repaired: [], needsKey: [] });
  });
});
