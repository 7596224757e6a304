// src/repo/records.ts: what a repository's JSON files may hold, checked before it is trusted.
import { describe, expect, it } from 'vitest';
import { CatalogSchema, ReleaseRecordSchema, parseWith } from '../../../src/repo/records.js';
import { Repository } from '../../../src/repo/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { publish } from './fixtures.js';

describe('parseWith', () => {
  it('refuses JSON made of empty arrays (a gigabyte of heap once parsed) before parsing it', () => {
    const bomb = Buffer.from(`[${'[],'.repeat(400_000)}[]]`);
    const before = process.memoryUsage().heapUsed;
    expect(() => parseWith(CatalogSchema, bomb, 'catalog tarport/catalog.json')).toThrow(
      expect.objectContaining({ code: 'INTEGRITY', message: `catalog tarport/catalog.json holds more than ${Math.floor(bomb.length / 8) + 1000} arrays and objects in ${bomb.length} bytes: not one tarport writes (refused before parsing it)` }),
    );
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(8 << 20);
  });

  it('takes a catalog tarport wrote', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, 'a');
    const got = await new Repository(t).readCatalog();
    expect(got!.catalog.releases.map((e) => e.tag)).toEqual(['a']);
    expect(parseWith(CatalogSchema, got!.bytes, 'catalog').releases).toHaveLength(1);
  });

  it('a catalog entry whose record is a path, not a record file name, is refused (INTEGRITY), never read', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, 'a');
    const { bytes } = (await new Repository(t).readCatalog())!;
    const forged = JSON.parse(bytes.toString()) as { releases: { record: string }[] };
    forged.releases[0]!.record = '../../../format.json';
    expect(() => parseWith(CatalogSchema, Buffer.from(JSON.stringify(forged)), 'catalog')).toThrow(expect.objectContaining({ code: 'INTEGRITY', message: expect.stringContaining('releases.0.record') }));
  });

  it('a time that is no date and time (a terminal escape in the column ls and log print) is refused, naming the field; tarport\'s own times are taken', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, 'a');
    const repo = new Repository(t);
    const { bytes, catalog } = (await repo.readCatalog())!;
    const record = (await repo.readRecord(catalog.releases[0]!, { digest: catalog.releases[0]!.digest, size: catalog.releases[0]!.size })).record;
    expect(parseWith(ReleaseRecordSchema, Buffer.from(JSON.stringify(record)), 'record').created).toBe(record.created);
    // a catalog that expires past the year 9999 (a --catalog-ttl of centuries), as toISOString writes it
    const far = new Date(Date.UTC(10240, 0, 1)).toISOString();
    expect(far).toMatch(/^\+010240-/);
    expect(parseWith(CatalogSchema, Buffer.from(JSON.stringify({ ...(JSON.parse(bytes.toString()) as object), expires: far })), 'catalog').expires).toBe(far);
    for (const [field, value] of [
      ['created', '\u001b[2J\u001b[31mPWNED\u001b[0m'],
      ['created', '2026-01-01T00:00:00.000Z\u202e'],
      ['created', '2026-13-45T00:00:00.000Z'],
      ['expires', 'never'],
    ] as const) {
      const forged = { ...(JSON.parse(bytes.toString()) as Record<string, unknown>), [field]: value };
      expect(() => parseWith(CatalogSchema, Buffer.from(JSON.stringify(forged)), 'catalog')).toThrow(expect.objectContaining({ code: 'INTEGRITY', message: expect.stringContaining(`${field}: is no date and time (as 2026-01-31T12:00:00.000Z)`) }));
    }
    const forgedRecord = { ...record, created: '\u001b]0;title\u0007' };
    expect(() => parseWith(ReleaseRecordSchema, Buffer.from(JSON.stringify(forgedRecord)), 'record')).toThrow(expect.objectContaining({ code: 'INTEGRITY', message: expect.stringContaining('created: is no date and time') }));
  });
});
