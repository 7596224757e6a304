import { describe, expect, it } from 'vitest';
import { Repository, type Ack } from '../../../src/repo/index.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { publish } from './fixtures.js';

describe('describeRelease: one description of a release for ls and the page', () => {
  it('names the version, its stored size, whether the catalog names it, and the hosts that hold it', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    await publish(t, 1, '1');
    const repo = new Repository(t);
    const catalog = (await repo.readCatalog())!.catalog;
    const current = new Set(catalog.releases.map((e) => `${e.name}:${e.tag}:${e.record}`));
    const [v1, v2] = await repo.listReleases('demo/app', '1');
    const digestOf = async (ref: typeof v1) => (await repo.readRecord(ref!)).digest;
    const acks: Ack[] = [{ schema: 'tarport.ack/v1', host: 'h1', hostname: 'edge-1', updated: '2026-12-01T00:00:00Z', releases: [{ name: 'demo/app', tag: '1', version: 2, digest: await digestOf(v2), loaded: '2026-12-01T00:00:00Z', runtime: 'docker', platform: 'linux/amd64' }] }];
    const old = await repo.describeRelease(v1!, current, acks);
    const now = await repo.describeRelease(v2!, current, acks);
    expect([old.version, old.current, now.version, now.current]).toEqual([1, false, 2, true]);
    expect(now.size).toBe(now.record.layers.reduce((n, l) => n + l.size, 0) + now.record.config!.size);
    expect(now.digest).toBe(await digestOf(v2));
    expect(now.hosts.map((h) => h.hostname)).toEqual(['edge-1']);
    expect(old.hosts).toEqual([]);
    expect([now.signer, now.encrypted, now.members]).toEqual([null, false, []]);
  });
});
