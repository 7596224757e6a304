import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Transport } from '../src/transport/index.js';

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

    it('refuses keys that would escape the root', async () => {
      const t = await make();
      await expect(t.write('../escape', () => Readable.from([Buffer.from('x')]))).rejects.toThrow(/invalid transport key/);
      await expect(t.stat('/abs')).rejects.toThrow(/invalid transport key/);
      await t.close();
    });
  });
}

