// src/repo/intents.ts: a publish waits out a gc that announced it would delete what it reuses.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CLOCK_SKEW_MS, GC_WINDOW_MS, PublishIntent } from '../../../src/repo/intents.js';
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
});
