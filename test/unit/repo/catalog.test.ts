// src/repo/catalog.ts: the catalog rebuilt from releases/ (the truth).
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { rebuildEntries } from '../../../src/repo/catalog.js';
import { Store } from '../../../src/repo/store.js';
import { MemoryTransport, type ReadOptions } from '../../../src/transport/index.js';
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
