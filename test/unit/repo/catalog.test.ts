// src/repo/catalog.ts: the catalog rebuilt from releases/ (the truth).
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { rebuildEntries } from '../../../src/repo/catalog.js';
import { Store } from '../../../src/repo/store.js';
import { MemoryTransport, type ReadOptions } from '../../../src/transport/index.js';
import { Repository } from '../../../src/repo/index.js';
import { copies, publish } from './fixtures.js';

/** A memory store whose newest record of demo/app:a fails to read with `fault`. */
class NewestRecordFails extends MemoryTransport {
  constructor(
    from: MemoryTransport,
    private readonly fault: () => Error,
  ) {
    super();
    for (const [k, v] of from.files) this.files.set(k, v);
  }
  newest(): string {
    return [...this.files.keys()].filter((k) => k.startsWith('tarport/releases/demo%2Fapp/a/') && k.endsWith('.json')).sort().at(-1)!;
  }
  override async read(key: string, opts?: ReadOptions): Promise<Readable> {
    if (key === this.newest()) throw this.fault();
    return super.read(key, opts);
  }
}

const twoVersions = copies(async () => {
  const base = new MemoryTransport();
  await publish(base, 0, 'a');
  await publish(base, 1, 'a');
  return base;
});

describe('rebuildEntries', () => {
  it('passes over a damaged newest record: the tag is its newest record that reads', async () => {
    const t = new NewestRecordFails(await twoVersions(), () => new TarportError('INTEGRITY', 'release record demo/app:a v2: not JSON'));
    const entries = await rebuildEntries(new Store(t), undefined);
    expect(entries.map((e) => `${e.name}:${e.tag} v${e.version}`)).toEqual(['demo/app:a v1']);
  });

  it('a newest record that could not be read (a dropped link) fails the rebuild: the catalog never goes back to an older release for it', async () => {
    const cut = new TarportError('CONNECTION', 'read releases/demo/app/a/…: the connection was lost', { retryable: true });
    const t = new NewestRecordFails(await twoVersions(), () => cut);
    await expect(rebuildEntries(new Store(t), undefined)).rejects.toBe(cut);
  });
});

describe('a mirror that lists no folder (HTTP without autoindex: pull needs none)', () => {
  /** Serves the files of `t` over HTTP; a folder gets 403 and an HTML page, as nginx without autoindex. */
  async function mirror(t: MemoryTransport, without: string[] = [], folderStatus = 403) {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      const key = decodeURIComponent(new URL(req.url!, 'http://x').pathname.replace(/^\/repo\//, ''));
      if (key.endsWith('/') || key === '') return res.writeHead(folderStatus, { 'content-type': 'text/html' }).end(`<html>${folderStatus}</html>`);
      const body = without.includes(key) ? undefined : t.files.get(key);
      if (!body) return res.writeHead(404).end();
      res.writeHead(200, { 'content-length': body.length }).end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { HttpTransport } = await import('../../../src/transport/http.js');
    const { parseLocation } = await import('../../../src/transport/location.js');
    const port = (server.address() as import('node:net').AddressInfo).port;
    const http = new HttpTransport(parseLocation(`http://127.0.0.1:${port}/repo`) as ConstructorParameters<typeof HttpTransport>[0], { retries: 1 });
    return { repo: new Repository(http), stop: async () => (await http.close(), server.close()) };
  }

  it('a missing catalog.json is no catalog (pull: NOT_FOUND), not a demand for a folder listing', async () => {
    const m = await mirror(await twoVersions(), ['tarport/catalog.json']);
    try {
      expect(await m.repo.readCatalog()).toBeUndefined();
    } finally {
      await m.stop();
    }
  });

  it("a catalog without its signature has none (--trust then says 'not signed'), not a demand for a folder listing", async () => {
    const m = await mirror(await twoVersions());
    try {
      const got = (await m.repo.readCatalog())!;
      expect(got.catalog.releases.length).toBeGreaterThan(0);
      expect(await m.repo.readCatalogSignature(got)).toBeUndefined();
    } finally {
      await m.stop();
    }
  });

  it('a server that fails the listing (503) is a failure of the server, tried again and named: not a server without listings', async () => {
    const m = await mirror(await twoVersions(), ['tarport/catalog.json'], 503);
    try {
      await expect(m.repo.readCatalog()).rejects.toMatchObject({ code: 'CONNECTION', retryable: true, message: expect.stringContaining('the server answered HTTP 503') });
    } finally {
      await m.stop();
    }
  });
});

describe('the next catalog\'s sequence', () => {
  it('goes past every copy in catalogs/, not only past catalog.json: an older catalog put back does not make a sequence repeat', async () => {
    const t = await twoVersions();
    const seqOf = (k: string) => Number(/catalogs\/(\d+)-/.exec(k)![1]);
    const copiesNow = () => [...t.files.keys()].filter((k) => k.startsWith('tarport/catalogs/') && k.endsWith('.json'));
    const highest = Math.max(...copiesNow().map(seqOf));
    const oldest = copiesNow().sort()[0]!;
    expect(seqOf(oldest)).toBeLessThan(highest);
    // catalog.json restored from the oldest copy (a backup, an old stick's), then a push of a new tag
    t.files.set('tarport/catalog.json', t.files.get(oldest)!);
    await publish(t, 0, 'b');
    const repo = new Repository(t);
    expect((await repo.readCatalog())!.catalog.sequence).toBe(highest + 1);
    const seqs = copiesNow().map(seqOf);
    expect(new Set(seqs).size).toBe(seqs.length);
  });
});
