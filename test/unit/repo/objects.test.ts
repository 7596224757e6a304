// src/repo/objects.ts: putSplit, an object stored in parts (sync --max-file-size).
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { blobInfo, putSplit, readBlob } from '../../../src/repo/objects.js';
import { Store } from '../../../src/repo/store.js';
import { FileTransport } from '../../../src/transport/file.js';
import { MemoryTransport } from '../../../src/transport/memory.js';
import type { Source, WriteOptions } from '../../../src/transport/types.js';
import { tempDir } from '../../helpers.js';

const desc = { digest: `sha256:${'a'.repeat(64)}`, size: 3 << 20 };

/** A source object whose read fails after `good` bytes (a damaged object, a read that gave up). */
function failingAfter(good: number, fault: Error): Readable {
  return Readable.from(
    (async function* () {
      yield randomBytes(good);
      await new Promise((r) => setTimeout(r, 10));
      throw fault;
    })(),
  );
}

const within = <T>(p: Promise<T>, ms: number) => Promise.race([p.then((v) => v, (e: unknown) => e), new Promise((r) => setTimeout(() => r(`still waiting after ${ms} ms`), ms))]);

describe('putSplit', () => {
  it('a source object that fails in the middle of a part fails the store with its fault; the part it cut is removed, no part list is written', async () => {
    const t = new FileTransport(await tempDir());
    const fault = new TarportError('DIGEST_MISMATCH', `object ${desc.digest} in file:///src: digest mismatch`);
    const got = await within(putSplit(new Store(t), desc, async () => failingAfter((1 << 20) + 4096, fault), 1 << 20), 5_000);
    expect(got).toBe(fault);
    // the first part was whole and stays under its name; the object is not there without its list
    expect(await readdir(join(t.root, 'blobs', 'sha256'))).toEqual([`${'a'.repeat(64)}.p0001`]);
  });

  it('a transport that would send a part again gets a refusal it does not retry, not a stream that never ends', async () => {
    const t = new MemoryTransport();
    let calls = 0;
    Object.assign(t, {
      write: async (_key: string, source: Source, _opts?: WriteOptions) => {
            const first = (source as () => Readable)();
        first.resume();
        calls++;
        // a cut after the first try: the transport asks for the source again
        return (source as () => Readable)();
      },
    });
    const got = await within(putSplit(new Store(t), desc, async () => Readable.from([randomBytes(desc.size)]), 1 << 20), 5_000);
    expect(calls).toBe(1);
    expect(got).toMatchObject({ code: 'IO', retryable: false, message: `part 1 of ${desc.digest}: cannot be sent again (read once from the source object)` });
  });

  it('a damaged whole copy stored before is removed once the parts are complete: readers then read the parts', async () => {
    const data = randomBytes(3 << 20);
    const { createHash } = await import('node:crypto');
    const d = { digest: `sha256:${createHash('sha256').update(data).digest('hex')}`, size: data.length };
    const t = new FileTransport(await tempDir());
    const store = new Store(t);
    await t.write(`blobs/sha256/${d.digest.slice(7)}`, () => Readable.from([Buffer.alloc(d.size)])); // the right size, the wrong bytes
    await putSplit(store, d, async () => Readable.from([data]), 1 << 20);
    expect(await blobInfo(store, d.digest)).toEqual({ size: d.size, split: true });
    const chunks: Buffer[] = [];
    for await (const c of await readBlob(store, d)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
  });
});
