import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Transport } from '../src/transport/index.js';
import { tempDir } from './helpers.js';

async function readAll(t: Transport, key: string, offset = 0): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await t.read(key, { offset })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function names(t: Transport, folder: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of t.list(folder)) out.push(`${e.name}${e.isDir ? '/' : ''}`);
  return out.sort();
}

/** The one contract every transport passes (restic's backend test suite, in spirit). */
export function transportContract(name: string, make: () => Promise<Transport>): void {
  describe(`transport contract: ${name}`, () => {
    it('writes, stats, reads from an offset, and creates parent folders', async () => {
      const t = await make();
      const data = randomBytes(300_000);
      const r = await t.write('a/b/c.bin', () => Readable.from([data]));
      expect(r.size).toBe(data.length);
      expect((await t.stat('a/b/c.bin'))?.size).toBe(data.length);
      expect((await readAll(t, 'a/b/c.bin')).equals(data)).toBe(true);
      expect((await readAll(t, 'a/b/c.bin', 123_456)).equals(data.subarray(123_456))).toBe(true);
      await t.close();
    });

    it('says undefined for a missing key and lists nothing for a missing folder', async () => {
      const t = await make();
      expect(await t.stat('nope/x')).toBeUndefined();
      expect(await names(t, 'nope')).toEqual([]);
      await t.close();
    });

    it('lists files and folders of one level', async () => {
      const t = await make();
      await t.write('d/x', () => Readable.from([Buffer.from('1')]));
      await t.write('d/sub/y', () => Readable.from([Buffer.from('2')]));
      expect(await names(t, 'd')).toEqual(['sub/', 'x']);
      await t.close();
    });

    it('renames over an existing target and removes (missing is fine)', async () => {
      const t = await make();
      await t.write('r/old', () => Readable.from([Buffer.from('new content')]));
      await t.write('r/target', () => Readable.from([Buffer.from('old')]));
      await t.rename('r/old', 'r/target');
      expect((await readAll(t, 'r/target')).toString()).toBe('new content');
      expect(await t.stat('r/old')).toBeUndefined();
      await t.remove('r/target');
      await t.remove('r/target');
      expect(await t.stat('r/target')).toBeUndefined();
      await t.close();
    });

    it('leaves nothing behind when the source stream fails', async () => {
      const t = await make();
      const failing = () =>
        new Readable({
          read() {
            this.push(Buffer.alloc(1000));
            this.destroy(new Error('source broke'));
          },
        });
      await expect(t.write('f/broken', failing)).rejects.toThrow(/source broke/);
      expect(await t.stat('f/broken')).toBeUndefined();
      await t.close();
    });

    it('readTo lends the same bytes as read, in order, through a slow sink and from an offset', async () => {
      const t = await make();
      // several MiB: the lending transports rotate their buffers and pause while the sink has both
      const data = randomBytes(8 * 1024 * 1024 + 12_345);
      await t.write('lend/x.bin', () => Readable.from([data]));
      const got: Buffer[] = [];
      let calls = 0;
      const n = await t.readTo('lend/x.bin', async (chunk) => {
        got.push(Buffer.from(chunk)); // a copy: the chunk goes back to the transport after this call
        // always asynchronous, sometimes slow: the transport must hold back while the sink has a chunk
        await new Promise((r) => (++calls % 3 === 0 ? setTimeout(r, 3) : setImmediate(r)));
      });
      expect(n).toBe(data.length);
      expect(Buffer.concat(got).equals(data)).toBe(true);
      const tail: Buffer[] = [];
      await t.readTo('lend/x.bin', (chunk) => void tail.push(Buffer.from(chunk)), { offset: 4_000_000 });
      expect(Buffer.concat(tail).equals(data.subarray(4_000_000))).toBe(true);
      await expect(t.readTo('lend/missing', () => undefined)).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await t.close();
    });

    it('readTo stops at once when the sink fails, and the transport goes on working', async () => {
      const t = await make();
      const data = randomBytes(3 * 1024 * 1024);
      await t.write('sink/x.bin', () => Readable.from([data]));
      let seen = 0;
      let afterFailure = 0;
      await expect(
        t.readTo('sink/x.bin', (chunk) => {
          if (seen > 1024 * 1024) afterFailure++;
          seen += chunk.length;
          if (seen > 1024 * 1024) throw new Error('disk full here');
        }),
      ).rejects.toThrow(/disk full here/);
      expect(afterFailure).toBe(0);
      expect((await readAll(t, 'sink/x.bin')).equals(data)).toBe(true);
      await t.close();
    });

    it('uploads a local file source; a missing file fails as the source, not retried, and leaves nothing', async () => {
      const t = await make();
      const dir = await tempDir();
      const data = randomBytes(2 * 1024 * 1024 + 7);
      await writeFile(join(dir, 'f.bin'), data);
      expect((await t.write('file/f.bin', { file: join(dir, 'f.bin') })).size).toBe(data.length);
      expect((await readAll(t, 'file/f.bin')).equals(data)).toBe(true);
      await writeFile(join(dir, 'empty'), '');
      expect((await t.write('file/empty', { file: join(dir, 'empty') })).size).toBe(0);
      expect((await t.stat('file/empty'))?.size).toBe(0);
      const started = Date.now();
      await expect(t.write('file/gone', { file: join(dir, 'missing.bin') })).rejects.toThrow(/missing\.bin.*|reading the source failed/);
      expect(Date.now() - started).toBeLessThan(2000); // no backoff: a missing file is not the server's fault
      expect(await t.stat('file/gone')).toBeUndefined();
      await t.close();
    });

    it('uploads empty sources again and again, from a file and from a stream', async () => {
      // over FTPS an empty upload ends the data connection at once: before the TLS handshake is done,
      // that cut it and the server died with it (a race, lost about every other time)
      const t = await make();
      const dir = await tempDir();
      await writeFile(join(dir, 'empty'), '');
      for (let i = 0; i < 6; i++) {
        expect((await t.write(`empty/f${i}`, { file: join(dir, 'empty') })).size).toBe(0);
        expect((await t.write(`empty/s${i}`, () => Readable.from([]))).size).toBe(0);
      }
      expect((await names(t, 'empty')).sort()).toEqual([0, 1, 2, 3, 4, 5].flatMap((i) => [`f${i}`, `s${i}`]).sort());
      expect((await readAll(t, 'empty/f5')).length).toBe(0);
      await t.close();
    });

    it('refuses keys that would escape the root', async () => {
      const t = await make();
      await expect(t.write('../escape', () => Readable.from([Buffer.from('x')]))).rejects.toThrow(/invalid transport key/);
      await expect(t.stat('/abs')).rejects.toThrow(/invalid transport key/);
      await t.close();
    });
  });
}

