import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { Repository, REPOSITORY_ID_RE, serialize } from '../../../src/repo/index.js';
import { syncRepos } from '../../../src/sync/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { faults, publish } from './fixtures.js';

const TTL = 90 * 24 * 3600 * 1000;

describe('repository identity', () => {
  it('init writes an id once; the catalog of the next publish names it', async () => {
    const t = new MemoryTransport();
    const repo = new Repository(t);
    expect((await repo.init()).created).toBe(true);
    const id = await repo.identity();
    expect(id).toMatch(REPOSITORY_ID_RE);
    expect(await repo.init()).toEqual({ id, created: false });
    const again = await repo.begin();
    await again.end();
    expect(again.repositoryId).toBe(id);
    await publish(t, 0, '1');
    expect((await repo.readCatalog())!.catalog.repository).toBe(id);
    expect([...t.files.keys()].filter((k) => k.startsWith('tarport/pending/'))).toEqual([]);
  });

  it('a lost tarport/format.json: check warns, and the next write takes the id and format version back from the catalog, never a new id', async () => {
    const { checkRepository } = await import('../../../src/repo/index.js');
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const repo = new Repository(t);
    const id = await repo.identity();
    // the catalog shows a multi-platform release: the format it needs is 3
    const format = JSON.parse(t.files.get('tarport/format.json')!.toString()) as { version: number };
    t.files.delete('tarport/format.json');
    const catalog = JSON.parse(t.files.get('tarport/catalog.json')!.toString()) as { releases: { manifest?: { mediaType: string } }[] };
    const multi = { ...catalog, releases: catalog.releases.map((e) => ({ ...e, manifest: { ...e.manifest!, mediaType: 'application/vnd.oci.image.index.v1+json' } })) };
    t.files.set('tarport/catalog.json', Buffer.from(JSON.stringify(multi)));
    expect((await checkRepository(repo)).warnings).toContainEqual({ what: 'tarport/format.json', problem: `missing: the repository's identity (${id}, which the catalog names) is written again from the catalog by the next push or sync` });
    const tx = await repo.begin();
    await tx.end();
    expect(tx.repositoryId).toBe(id);
    expect(JSON.parse(t.files.get('tarport/format.json')!.toString())).toEqual({ format: 'tarport', version: 3, id });
    expect(format.version).toBe(2);
  });

  it('a write to a location without a repository is refused before anything is written, unless create', async () => {
    const t = new MemoryTransport('stick');
    const e = await new Repository(t).begin().then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(TarportError);
    expect((e as TarportError).code).toBe('NO_REPOSITORY');
    expect((e as TarportError).message).toContain('tarport init memory://stick');
    expect([...t.files.keys()]).toEqual([]);
    // create: the identity comes with the first thing kept; a transaction that keeps nothing leaves no file
    const tx = await new Repository(t).begin({ create: true });
    await tx.end();
    expect([...t.files.keys()]).toEqual([]);
    await publish(t, 0, '1');
    expect(await new Repository(t).identity()).toMatch(REPOSITORY_ID_RE);
  });

  it('a tarport 0.1 repository stays readable, and the next publish gives it an id and a v2 catalog', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    // turn it into what tarport 0.1 wrote: format 1 without id, catalog v1 with catalog.json.asc
    const repo = new Repository(t);
    const { catalog } = (await repo.readCatalog())!;
    const v1 = { ...catalog, schema: 'tarport.catalog/v1' as const };
    delete (v1 as { repository?: string }).repository;
    for (const k of [...t.files.keys()]) if (k.startsWith('tarport/catalogs/')) t.files.delete(k);
    t.files.set('tarport/catalog.json', serialize(v1));
    t.files.set('tarport/catalog.json.asc', Buffer.from('a 0.1 signature'));
    t.files.set('tarport/format.json', serialize({ format: 'tarport', version: 1 }));
    const old = (await repo.readCatalog())!;
    expect(old.catalog.repository).toBeUndefined();
    expect(old.signatureKey).toBe('tarport/catalog.json.asc');
    expect(await repo.identity()).toBeUndefined();
    await publish(t, 1, '1');
    const now = (await repo.readCatalog())!;
    expect(now.catalog.schema).toBe('tarport.catalog/v2');
    expect(now.catalog.repository).toBe(await repo.identity());
    expect(t.files.has('tarport/catalog.json.asc')).toBe(false);
    expect(await faults(t)).toEqual([]);
  });

  it('a sync destination with no id takes its source\'s, and carries its catalog as it is', async () => {
    const src = new MemoryTransport('src');
    await publish(src, 0, '1');
    await publish(src, 1, '2');
    const dst = new MemoryTransport('dst');
    await syncRepos(new Repository(src), new Repository(dst), { create: true, catalogTtlMs: TTL });
    expect(await new Repository(dst).identity()).toBe(await new Repository(src).identity());
    expect(dst.files.get('tarport/catalog.json')).toEqual(src.files.get('tarport/catalog.json'));
    expect(await faults(dst)).toEqual([]);
  });

  it('a partial sync (--only) merges at a sequence above the source\'s, naming every tag DST holds', async () => {
    const src = new MemoryTransport('src');
    await publish(src, 0, '1');
    await publish(src, 1, '2');
    const dst = new MemoryTransport('dst');
    await syncRepos(new Repository(src), new Repository(dst), { create: true, catalogTtlMs: TTL, only: [{ name: 'demo/app', tag: '2' }] });
    const s = (await new Repository(src).readCatalog())!.catalog;
    const d = (await new Repository(dst).readCatalog())!.catalog;
    expect(d.sequence).toBeGreaterThan(s.sequence);
    expect(d.releases.map((e) => e.tag)).toEqual(['2']);
    expect(await faults(dst)).toEqual([]);
  });
});
