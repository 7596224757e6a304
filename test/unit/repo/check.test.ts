// src/repo/check.ts: a fault of the repository is listed; a fault of the way to it ends the check.
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { Repository, checkRepository } from '../../../src/repo/index.js';
import { MemoryTransport, type ReadOptions } from '../../../src/transport/index.js';
import { copies, publish } from './fixtures.js';

const demo = copies(async () => {
  const base = new MemoryTransport();
  await publish(base, 0, 'a');
  return base;
});

/** A copy of `from` whose object reads fail with `fault()`. */
function objectsFail(from: MemoryTransport, fault: () => Error): MemoryTransport {
  const t = new (class extends MemoryTransport {
    override async read(key: string, opts?: ReadOptions): Promise<Readable> {
      if (key.startsWith('blobs/')) throw fault();
      return super.read(key, opts);
    }
    override async readTo(key: string, ...rest: Parameters<MemoryTransport['readTo']> extends [string, ...infer R] ? R : never): Promise<number> {
      if (key.startsWith('blobs/')) throw fault();
      return super.readTo(key, ...rest);
    }
  })();
  for (const [k, v] of from.files) t.files.set(k, v);
  return t;
}

describe('checkRepository', () => {
  it('an object whose bytes changed is a fault of the repository, listed', async () => {
    const base = await demo();
    const key = [...base.files.keys()].find((k) => k.startsWith('blobs/') && base.files.get(k)!.length > 1000)!;
    base.files.set(key, Buffer.alloc(base.files.get(key)!.length));
    const r = await checkRepository(new Repository(base));
    expect(r.faults.map((f) => f.problem)).toEqual([expect.stringContaining('digest mismatch')]);
  });

  it('a link that drops while objects are read ends the check with that fault (exit 1), not a list of false faults (exit 3)', async () => {
    const cut = new TarportError('CONNECTION', 'read blobs/sha256/…: the connection was lost', { retryable: true });
    await expect(checkRepository(new Repository(objectsFail(await demo(), () => cut)))).rejects.toBe(cut);
  });

  it('faults found before a link drops are handed out as they are found (onFault), so a check cut short has said them', async () => {
    const cut = new TarportError('CONNECTION', 'read blobs/sha256/…: the connection was lost', { retryable: true });
    let reads = 0;
    const t = objectsFail(await demo(), () => (++reads === 1 ? new TarportError('NOT_FOUND', 'read blobs/sha256/…: not found') : cut));
    const heard: string[] = [];
    await expect(checkRepository(new Repository(t), { onFault: (f) => heard.push(f.problem) })).rejects.toBe(cut);
    expect(reads).toBe(2);
    expect(heard).toEqual(['read blobs/sha256/…: not found']);
  });

  it('an object that is not there is a fault of the repository', async () => {
    const missing = () => new TarportError('NOT_FOUND', 'read blobs/sha256/…: not found');
    const r = await checkRepository(new Repository(objectsFail(await demo(), missing)));
    expect(r.faults.length).toBeGreaterThan(0);
    expect(r.faults.every((f) => f.problem === 'read blobs/sha256/…: not found')).toBe(true);
  });

  it("a read error of a repository on this host's disk (a bad sector: EIO) is the medium's fault, listed; over a link it ends the check", async () => {
    const eio = () => new TarportError('IO', 'read blobs/sha256/…: EIO: i/o error, read');
    const local = objectsFail(await demo(), eio);
    expect(local.capabilities.local).toBe(true);
    const r = await checkRepository(new Repository(local));
    expect(r.faults.length).toBeGreaterThan(0);
    expect(r.faults.every((f) => f.problem === 'read blobs/sha256/…: EIO: i/o error, read')).toBe(true);
    const remote = objectsFail(await demo(), eio);
    Object.defineProperty(remote, 'capabilities', { value: { ...remote.capabilities, local: false } });
    await expect(checkRepository(new Repository(remote))).rejects.toMatchObject({ code: 'IO' });
  });

  it('an object whose path is a folder (on a local repository) is a fault naming it, not an internal error', async () => {
    const { mkdtemp, mkdir, rm } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { FileTransport } = await import('../../../src/transport/index.js');
    const root = await mkdtemp(join(tmpdir(), 'tarport-check-'));
    try {
      const t = new FileTransport(root);
      for (const [k, v] of (await demo()).files) await t.write(k, () => Readable.from([v]));
      const key = [...(await demo()).files.keys()].find((k) => k.startsWith('blobs/sha256/'))!;
      await rm(join(root, key));
      await mkdir(join(root, key));
      const r = await checkRepository(new Repository(t));
      expect(r.faults.map((f) => f.problem)).toContain(`read ${key} from file://${root}: a folder, where a file belongs; refusing`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a folder under releases/ that no tarport wrote (New Folder) is a warning of check, and stops no listing, gc or publish', async () => {
    const t = await demo();
    t.files.set('tarport/releases/New Folder/x/readme.txt', Buffer.from('copied by hand'));
    t.files.set('tarport/releases/demo%2Fapp/Tag With Space/readme.txt', Buffer.from('copied by hand'));
    const repo = new Repository(t);
    expect((await repo.listTags()).map((x) => `${x.name}:${x.tag}`)).toEqual(['demo/app:a']);
    const r = await checkRepository(repo);
    expect(r.faults).toEqual([]);
    expect(r.warnings.filter((w) => w.what.startsWith('tarport/releases/')).sort((a, b) => (a.what < b.what ? -1 : 1))).toEqual([
      { what: 'tarport/releases/New Folder', problem: 'not an encoded name: "New Folder": a folder no tarport wrote, left out of every listing; move it out of the repository' },
      { what: 'tarport/releases/demo%2Fapp/Tag With Space', problem: 'not an encoded name: "Tag With Space": a folder no tarport wrote, left out of every listing; move it out of the repository' },
    ]);
    await publish(t, 1, 'b');
    expect((await repo.readCatalog())!.catalog.releases.map((e) => e.tag).sort()).toEqual(['a', 'b']);
  });
});
