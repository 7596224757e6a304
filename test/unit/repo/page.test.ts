import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../../src/producer/index.js';
import { Repository, renderPage, type Ack, type Catalog, type PageRelease } from '../../../src/repo/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { pageShows } from '../../../src/repo/page.js';
import { Store } from '../../../src/repo/store.js';
import { multiPlatform, tarBytes } from '../../corpus/tarwriter.js';
import { tempDir } from '../../helpers.js';
import { publish } from './fixtures.js';

const HOSTILE = '<script>alert(1)</script>"\'&<img src=x onerror=alert(2)>';

const catalog: Catalog = { schema: 'tarport.catalog/v2', repository: '0123456789abcdef0123456789abcdef', sequence: 7, created: '2026-12-01T00:00:00Z', expires: '2027-03-01T00:00:00Z', releases: [] };
const release = (over: Partial<PageRelease>): PageRelease => ({
  name: 'team/app',
  tag: '1',
  version: 1,
  kind: 'image',
  size: 2048,
  created: '2026-12-01T00:00:00Z',
  signer: null,
  signerUserId: null,
  encrypted: false,
  current: false,
  digest: `sha256:${'a'.repeat(64)}`,
  platforms: ['linux/amd64'],
  layers: [`sha256:${'1'.repeat(64)}`, `sha256:${'2'.repeat(64)}`],
  hosts: [],
  ...over,
});

describe('index.html', () => {
  it('counts a layer as shared only when another version holds it, not when one version lists it twice', () => {
    const L = (c: string) => `sha256:${c.repeat(64)}`;
    const html = renderPage({
      catalog,
      releases: [release({ version: 1, layers: [L('1'), L('2'), L('2')] }), release({ version: 2, layers: [L('1'), L('3')] }), release({ version: 3, layers: [L('4')] })],
      acks: [],
    });
    expect(html).toContain('<td>3 (1 shared with other versions)</td>');
    expect(html).toContain('<td>2 (1 shared with other versions)</td>');
    expect(html).toMatch(/<td>v3<\/td>(<td>[^<]*<\/td>){4}<td>1<\/td>/);
  });

  it('escapes every string from the repository: no markup of its own gets through', () => {
    const ack: Ack = { schema: 'tarport.ack/v1', host: 'h1', hostname: 'edge-1', updated: '2026-12-01T01:00:00Z', releases: [] };
    const html = renderPage({ catalog, releases: [release({ created: HOSTILE, platforms: [HOSTILE], signer: HOSTILE, signerUserId: HOSTILE, hosts: [{ host: 'h1', hostname: 'edge-1', loaded: HOSTILE, runtime: 'docker', platform: 'linux/amd64' }] })], acks: [ack] });
    expect(html).not.toContain('<script');
    expect(html).not.toContain('<img');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;&lt;img src=x onerror=alert(2)&gt;');
    // no request of its own: nothing names another resource
    expect(html).not.toMatch(/<[^>]*\s(src|href)=/);
    expect(html).toContain("default-src 'none'");
  });

  it('marks the current version, counts layers shared between versions, names the pull command and the hosts', () => {
    const v1 = release({ version: 1, hosts: [{ host: 'h1', hostname: 'edge-1', loaded: '2026-12-01T01:00:00Z', runtime: 'docker', platform: 'linux/amd64' }] });
    const v2 = release({ version: 2, current: true, digest: `sha256:${'b'.repeat(64)}`, layers: [`sha256:${'1'.repeat(64)}`, `sha256:${'3'.repeat(64)}`] });
    const html = renderPage({ catalog, releases: [v1, v2], acks: [] });
    expect(html).toContain('tarport pull --from REPOSITORY team/app:1');
    expect(html).toContain('v2 <strong>current</strong>');
    expect(html.match(/2 \(1 shared with other versions\)/g)).toHaveLength(2);
    expect(html).toContain('edge-1 <span class="muted">(h1, docker linux/amd64, 2026-12-01T01:00:00Z)</span>');
  });

  it("shows the signer's user id above its fingerprint, and the fingerprint alone when the signature names none", () => {
    const fpr = 'AAAA BBBB CCCC DDDD EEEE  FFFF 0000 1111 2222 3333';
    const html = renderPage({ catalog, releases: [release({ signer: fpr, signerUserId: 'Release Bot <release@example.org>' }), release({ version: 2, signer: fpr })], acks: [] });
    expect(html).toContain(`<td>Release Bot &lt;release@example.org&gt;<br><code>${fpr}</code></td>`);
    expect(html).toContain(`<td><code>${fpr}</code></td>`);
  });

  it('is written with the catalog by every publish, and lists every version with its platform', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    await publish(t, 1, '1');
    const html = t.files.get('index.html')!.toString('utf8');
    expect(html).toContain('<h2 id="demo/app:1">demo/app:1</h2>');
    expect(html).toContain('<td>v1</td>');
    expect(html).toContain('v2 <strong>current</strong>');
    expect(html).toMatch(/<td>linux\/[a-z0-9]+(\/[a-z0-9]+)?<\/td>/);
    const seq = (await new Repository(t).readCatalog())!.catalog.sequence;
    expect(html).toContain(`catalog sequence ${seq}`);
  });

  it("lists a multi-platform release's platforms, its attestation and the platform listed without blobs", async () => {
    const t = new MemoryTransport();
    const p = join(await tempDir(), 'multi.tar');
    await writeFile(p, tarBytes(multiPlatform({ shape: 'nested', absent: true }).items));
    await publishArchive(new Repository(t), p, { create: true, compression: 'gzip', catalogTtlMs: DEFAULT_CATALOG_TTL_MS });
    const html = t.files.get('index.html')!.toString('utf8');
    expect(html).toContain('<td>linux/amd64, linux/arm64/v8, attestation-manifest (unknown/unknown, never loaded), linux/s390x (listed without its blobs)</td>');
  });

  it('a rewrite reads only the records that are new since the last one (the page data keeps the rest)', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    await publish(t, 1, '1');
    await publish(t, 0, '2');
    const before = new Set([...t.files.keys()].filter((k) => k.startsWith('tarport/releases/') && k.endsWith('.json')));
    expect(before.size).toBe(3);
    const reads: string[] = [];
    const read = t.read.bind(t);
    t.read = (key, opts) => {
      reads.push(key);
      return read(key, opts);
    };
    await publish(t, 1, '2');
    // the publisher reads the current record of each tag (what to reuse, whether it is new); the
    // page reads none of the records it described before
    const recordReads = reads.filter((k) => before.has(k));
    expect(recordReads.filter((k) => k.includes('/1/00000001-'))).toEqual([]);
    expect(reads.filter((k) => k.endsWith('.json.asc') && before.has(k.slice(0, -4)))).toEqual([]);
    const html = t.files.get('index.html')!.toString('utf8');
    expect(html.match(/<td>v1<\/td>/g)).toHaveLength(2);
    const data = JSON.parse(t.files.get('tarport/page-data.json')!.toString('utf8')) as { releases: Record<string, unknown> };
    expect(Object.keys(data.releases)).toHaveLength(4);
  });

  it('page data that does not parse, or that does not match its record, is rebuilt from the records', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const data = JSON.parse(t.files.get('tarport/page-data.json')!.toString('utf8')) as { releases: Record<string, { version: number; digest: string }> };
    const [key] = Object.keys(data.releases);
    // a lie about the record: another digest (and version) than the record file's name carries
    data.releases[key!] = { ...data.releases[key!]!, version: 1, digest: `sha256:${'f'.repeat(64)}` };
    t.files.set('tarport/page-data.json', Buffer.from(JSON.stringify(data)));
    await publish(t, 1, '1');
    const kept = JSON.parse(t.files.get('tarport/page-data.json')!.toString('utf8')) as typeof data;
    expect(kept.releases[key!]!.digest).not.toBe(`sha256:${'f'.repeat(64)}`);
    t.files.set('tarport/page-data.json', Buffer.from('{"schema": "tarport.page-data/v1", "releases": 7}'));
    await publish(t, 0, '2');
    const html = t.files.get('index.html')!.toString('utf8');
    expect(html).toContain('v2 <strong>current</strong>');
    expect(html).toContain('<h2 id="demo/app:2">demo/app:2</h2>');
    expect(Object.keys((JSON.parse(t.files.get('tarport/page-data.json')!.toString('utf8')) as typeof data).releases)).toHaveLength(3);
  });
});

describe('pageShows: whether the derived files caught up with a catalog a writer found current', () => {
  const store = async (page: string | undefined) => {
    const t = new MemoryTransport();
    if (page !== undefined) t.files.set('index.html', Buffer.from(page));
    return new Store(t);
  };
  const pageOf = (c: Catalog) => renderPage({ catalog: c, releases: [], acks: [] });

  it('the page of this catalog, or of a later one of the same repository: yes; of an earlier one, of another repository, an old page without the mark, none: no', async () => {
    expect(await pageShows(await store(pageOf(catalog)), catalog)).toBe(true);
    // a writer that read catalog 7 before another published 8 (and its page) leaves the newer page alone
    expect(await pageShows(await store(pageOf({ ...catalog, sequence: 8 })), catalog)).toBe(true);
    expect(await pageShows(await store(pageOf({ ...catalog, sequence: 6 })), catalog)).toBe(false);
    expect(await pageShows(await store(pageOf({ ...catalog, repository: 'fedcba9876543210fedcba9876543210' })), catalog)).toBe(false);
    expect(await pageShows(await store(pageOf(catalog).replace(/<meta name="tarport-catalog"[^>]*>/, '')), catalog)).toBe(false);
    expect(await pageShows(await store(undefined), catalog)).toBe(false);
  });
});
