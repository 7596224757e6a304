// src/repo/intents.ts: a publish waits out a gc that announced it would delete what it reuses.
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CLOCK_SKEW_MS, GC_WINDOW_MS, PublishIntent, listPending } from '../../../src/repo/intents.js';
import { PENDING_FOLDER } from '../../../src/repo/layout.js';
import { Store } from '../../../src/repo/store.js';
import { MemoryTransport } from '../../../src/transport/index.js';

const object = `sha256:${'b'.repeat(64)}`;

afterEach(() => {
  vi.useRealTimers();
});

describe('PublishIntent.protect', () => {
  it("waits out a gc notice no longer than a gc may delete by this host's clock, whatever deadline the notice names", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const t = new MemoryTransport();
    // a gc host whose clock runs far ahead, or a notice written to hold publishes for ever
    const notice = { schema: 'tarport.gc-notice/v1', created: new Date().toISOString(), deadline: '9999-01-01T00:00:00.000Z', objects: [object] };
    t.files.set(`${PENDING_FOLDER}/gc-0011223344556677.json`, Buffer.from(JSON.stringify(notice)));
    const intent = await PublishIntent.open(new Store(t));
    let done = false;
    const protecting = intent.protect([object]).then((missing) => ((done = true), missing));
    await vi.advanceTimersByTimeAsync(GC_WINDOW_MS);
    expect(done).toBe(false); // a real gc could still be deleting
    await vi.advanceTimersByTimeAsync(2 * CLOCK_SKEW_MS + 1000);
    expect(done).toBe(true);
    expect(await protecting).toEqual(new Set([object])); // it was never stored: the publish sends it
    await intent.close();
  });

  it('a long wait for a gc notice is said once, and holds one abort listener at a time, not one more per step', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const t = new MemoryTransport();
    const notice = { schema: 'tarport.gc-notice/v1', created: new Date().toISOString(), deadline: new Date(Date.now() + 60_000).toISOString(), objects: [object] };
    t.files.set(`${PENDING_FOLDER}/gc-0011223344556677.json`, Buffer.from(JSON.stringify(notice)));
    const said: string[] = [];
    const intent = await PublishIntent.open(new Store(t), undefined, (m) => said.push(m));
    const stop = new AbortController();
    const protecting = intent.protect([object], stop.signal).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(getEventListeners(stop.signal, 'abort').length).toBeLessThanOrEqual(1);
    // said once, naming the notice it waits for, not a silence of minutes
    expect(said).toEqual([expect.stringMatching(/^waiting for tarport\/pending\/gc-0011223344556677\.json in memory:\/\/test: a gc announced it may delete objects this publish reuses; waiting until \S+ at the latest/)]);
    stop.abort(new Error('stopped'));
    expect(await protecting).toMatchObject({ message: 'stopped' });
    await intent.close();
  });
});

/**
 * A server whose rename over a file deletes the target first (SFTP without posix-rename, an FTP
 * server that refuses to rename over a file): at each such gap, what a gc listing would find.
 */
class DeleteThenRename extends MemoryTransport {
  readonly seenInGaps: string[][] = [];
  constructor() {
    super();
    Object.defineProperty(this, 'capabilities', { value: { atomicRename: false, maxConnections: 8, local: false } });
  }

  override async rename(from: string, to: string): Promise<void> {
    if (this.files.has(to)) {
      this.files.delete(to);
      const intents = await listPending(new Store(this), 'intent');
      this.seenInGaps.push(intents.flatMap((i) => i.objects));
    }
    return super.rename(from, to);
  }
}

describe('PublishIntent on a server whose rename over a file deletes it first', () => {
  it('the intent never disappears while it is rewritten: a gc listing at any moment finds every object it protects', async () => {
    const t = new DeleteThenRename();
    const intent = await PublishIntent.open(new Store(t));
    const objects = ['a', 'b', 'c'].map((c) => `sha256:${c.repeat(64)}`);
    const protectedSoFar: string[] = [];
    for (const o of objects) {
      await intent.protect([o]);
      protectedSoFar.push(o);
      const found = (await listPending(new Store(t), 'intent')).flatMap((i) => i.objects);
      expect(found.sort()).toEqual([...protectedSoFar].sort());
    }
    // no rewrite went through a rename over the intent: there was no moment without it
    expect(t.seenInGaps).toEqual([]);
    await intent.close();
    expect([...t.files.keys()].filter((k) => k.startsWith(`${PENDING_FOLDER}/`))).toEqual([]);
  });

  it('where a rename replaces in one step, the intent keeps one file, rewritten in place', async () => {
    const t = new MemoryTransport();
    const intent = await PublishIntent.open(new Store(t));
    const keys = () => [...t.files.keys()].filter((k) => k.startsWith(`${PENDING_FOLDER}/intent-`));
    const first = keys();
    await intent.protect([object]);
    expect(keys()).toEqual(first);
    await intent.close();
    expect(keys()).toEqual([]);
  });
});

describe('listPending', () => {
  it('an intent rewritten under a new name between the listing and its read is found under the new one, not taken as ended', async () => {
    const t = new MemoryTransport();
    const now = Date.now();
    const body = Buffer.from(JSON.stringify({ schema: 'tarport.intent/v1', created: new Date(now).toISOString(), expires: new Date(now + 600_000).toISOString(), objects: [object] }));
    const [first, second] = [`${PENDING_FOLDER}/intent-0000000000000001.json`, `${PENDING_FOLDER}/intent-0000000000000002.json`];
    t.files.set(first, body);
    // the writer's next update lands right after gc listed the folder: new file first, old one gone
    const read = t.read.bind(t);
    let moved = false;
    t.read = async (key, o) => {
      if (key === first && !moved) {
        moved = true;
        t.files.set(second, body);
        t.files.delete(first);
      }
      return read(key, o);
    };
    const found = await listPending(new Store(t), 'intent');
    expect(moved).toBe(true);
    expect(found.map((p) => [p.key, p.objects])).toEqual([[second, [object]]]);
  });
});
