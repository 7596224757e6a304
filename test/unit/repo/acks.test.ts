import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { Repository, checkRepository, collectGarbage, type AckEntry } from '../../../src/repo/index.js';
import { MemoryTransport, type Transport } from '../../../src/transport/index.js';
import { publish } from './fixtures.js';

const host = { id: 'h-0123456789abcdef', hostname: 'edge-1' };

async function loadedEntry(t: MemoryTransport, tag = '1'): Promise<AckEntry> {
  const e = (await new Repository(t).readCatalog())!.catalog.releases.find((r) => r.tag === tag)!;
  return { name: e.name, tag: e.tag, version: e.version, digest: e.digest, platform: 'linux/amd64', runtime: 'docker', loaded: '2026-12-01T01:00:00Z' };
}

/** The same memory repository, whose writes never answer (a stalled server that ignores aborts too). */
function stalled(inner: MemoryTransport): Transport {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === 'write') return () => new Promise(() => undefined);
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('acknowledgements', () => {
  it('a host leaves tarport/acks/<id>.json; a later load of another tag keeps the first; the page shows the host', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    await publish(t, 1, '2');
    const repo = new Repository(t);
    expect(await repo.acknowledge(host, [await loadedEntry(t, '1')], { timeoutMs: 5000 })).toEqual({ written: true, key: `tarport/acks/${host.id}.json` });
    expect(await repo.acknowledge(host, [await loadedEntry(t, '2')], { timeoutMs: 5000 })).toMatchObject({ written: true });
    const { acks, bad } = await repo.readAcks();
    expect(bad).toEqual([]);
    expect(acks.map((a) => [a.host, a.hostname, a.releases.map((r) => r.tag)])).toEqual([[host.id, 'edge-1', ['1', '2']]]);
    expect(t.files.get('index.html')!.toString()).toContain('edge-1 <span class="muted">(h-0123456789abcdef, docker linux/amd64');
    // gc and check leave them alone
    await collectGarbage(repo, { keep: 1, dryRun: false, graceMs: 0 });
    expect(t.files.has(`tarport/acks/${host.id}.json`)).toBe(true);
    const c = await checkRepository(repo);
    expect(c.faults).toEqual([]);
    expect(c.warnings).toEqual([]);
  });

  it("a host's earlier file that could not be read (a dropped link) is not overwritten with this run's entries alone", async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    await publish(t, 1, '2');
    const repo = new Repository(t);
    await repo.acknowledge(host, [await loadedEntry(t, '1')], { timeoutMs: 5000 });
    const before = t.files.get(`tarport/acks/${host.id}.json`);
    const cut = new Proxy(t, {
      get(target, prop, receiver) {
        if (prop === 'read') return async (key: string, ...rest: unknown[]) => {
          if (key.startsWith('tarport/acks/')) throw new TarportError('CONNECTION', `read ${key}: the connection was lost`, { retryable: true });
          return (target.read as (...a: unknown[]) => unknown)(key, ...rest);
        };
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const r = await new Repository(cut).acknowledge(host, [await loadedEntry(t, '2')], { timeoutMs: 5000 });
    expect(r).toEqual({ written: false, readOnly: false, reason: `read tarport/acks/${host.id}.json: the connection was lost` });
    expect(t.files.get(`tarport/acks/${host.id}.json`)).toEqual(before);
  });

  it('reads at most 64 MiB of acknowledgements in all; the rest are named as not read', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    // 100 acknowledgements of 1 MiB each (valid, padded with spaces): more than a fleet writes
    const pad = ' '.repeat((1 << 20) - 400);
    for (let i = 0; i < 100; i++) {
      const id = `h-${String(i).padStart(3, '0')}`;
      t.files.set(`tarport/acks/${id}.json`, Buffer.from(`{"schema":"tarport.ack/v1","host":"${id}","hostname":"edge","updated":"2026-12-01T00:00:00Z","releases":[]}${pad}`));
    }
    const { acks, bad } = await new Repository(t).readAcks();
    expect(acks.length + bad.length).toBe(100);
    // 65 fill the budget; up to 7 more were being read at once (8 reads in flight)
    expect(acks.length).toBeGreaterThanOrEqual(64);
    expect(acks.length).toBeLessThanOrEqual(72);
    expect(bad.every((b) => b.problem === `not read: the acknowledgements read before it hold more than ${64 << 20} bytes`)).toBe(true);
  });

  it('a read-only location is not tried; a stalled write is given up within the bound, the ack not claimed', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const entry = await loadedEntry(t);
    const ro = new Proxy(t, { get: (target, prop) => (prop === 'capabilities' ? { ...target.capabilities, readOnly: true } : (Reflect.get(target, prop) as unknown)) });
    expect(await new Repository(ro).acknowledge(host, [entry], { timeoutMs: 5000 })).toEqual({ written: false, readOnly: true, reason: 'memory://test is read-only' });
    const started = Date.now();
    const r = await new Repository(stalled(t)).acknowledge(host, [entry], { timeoutMs: 300 });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(r).toEqual({ written: false, readOnly: false, reason: 'no answer within 300 ms' });
    expect([...t.files.keys()].filter((k) => k.startsWith('tarport/acks/') && !k.includes('.tarport-'))).toEqual([]);
  });

  it('a host id that is not a file name is refused; an ack file that does not parse is named, not trusted', async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const repo = new Repository(t);
    const e = await repo.acknowledge({ id: '../x', hostname: 'h' }, [await loadedEntry(t)], { timeoutMs: 5000 });
    expect(e).toMatchObject({ written: false, readOnly: false });
    expect((e as { reason: string }).reason).toContain('host id "../x"');
    t.files.set('tarport/acks/evil.json', Buffer.from(JSON.stringify({ schema: 'tarport.ack/v1', host: 'evil', hostname: '<b>x</b>', updated: 'now', releases: [] })));
    const { acks, bad } = await repo.readAcks();
    expect(acks).toEqual([]);
    expect(bad.map((b) => b.file)).toEqual(['tarport/acks/evil.json']);
    expect(bad[0]!.problem).toContain('hostname');
    expect((await checkRepository(repo)).warnings.map((w) => w.what)).toEqual(['tarport/acks/evil.json']);
    expect(e).not.toBeInstanceOf(TarportError);
  });

  it("a fleet's acknowledgements are read several at once, each once, and come back sorted; a bad one is named", async () => {
    const t = new MemoryTransport();
    await publish(t, 0, '1');
    const repo = new Repository(t);
    const entry = await loadedEntry(t);
    for (let i = 0; i < 20; i++) {
      const r = await repo.acknowledge({ id: `h-${String(i).padStart(2, '0')}`, hostname: `edge-${i}` }, [entry], { timeoutMs: 5_000 });
      expect(r.written).toBe(true);
    }
    t.files.set('tarport/acks/h-bad.json', Buffer.from('{'));
    let inFlight = 0;
    let most = 0;
    const reads: string[] = [];
    const read = t.read.bind(t);
    t.read = async (key, o) => {
      reads.push(key);
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
      return read(key, o);
    };
    const { acks, bad } = await repo.readAcks();
    expect(acks.map((a) => a.host)).toEqual(Array.from({ length: 20 }, (_, i) => `h-${String(i).padStart(2, '0')}`));
    expect(bad.map((b) => b.file)).toEqual(['tarport/acks/h-bad.json']);
    expect(reads.filter((k) => k.startsWith('tarport/acks/')).length).toBe(21);
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(8);
  });
});
