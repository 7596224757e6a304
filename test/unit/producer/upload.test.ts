// src/producer/upload.ts: a layer stored under a temporary name, its diff_id computed or taken as given.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { generateKeyPair, loadRecipients } from '../../../src/crypto/index.js';
import { Repository } from '../../../src/repo/index.js';
import { LayerUploader } from '../../../src/producer/upload.js';
import { MemoryTransport } from '../../../src/transport/index.js';
import { sha, tarBytes } from '../../corpus/tarwriter.js';
import { tempDir } from '../../helpers.js';

const layer = tarBytes([{ name: 'a.bin', data: Buffer.alloc(200_000, 3) }]);
const diffId = `sha256:${sha(layer)}`;

async function uploader() {
  const t = new MemoryTransport();
  const tx = await new Repository(t).begin({ create: true });
  return { t, tx, up: new LayerUploader(tx, 'app.tar', 'zstd', undefined, undefined) };
}

const tempObjects = (t: MemoryTransport) => [...t.files.keys()].filter((k) => /^blobs\/sha256\/\.tarport-[0-9a-f]{16}\.tmp$/.test(k));

describe('LayerUploader', () => {
  it('computes the diff_id of what it reads, or takes the one it is given without hashing again', async () => {
    const { t, tx, up } = await uploader();
    const read = await up.upload({ stream: Readable.from([layer]), what: 'layer x' });
    expect(read.layer).toMatchObject({ diffId, uncompressedSize: layer.length, compression: 'zstd', digest: read.blob.digest });
    // given: whatever it is told is what the descriptor says (the caller hashed these bytes already)
    const told = `sha256:${'0'.repeat(64)}`;
    const given = await up.upload({ stream: Readable.from([layer]), what: 'layer y', hashed: { diffId: told, size: 12345 } });
    expect(given.layer).toMatchObject({ diffId: told, uncompressedSize: 12345 });
    expect(up.staged).toHaveLength(2);
    expect(tempObjects(t)).toHaveLength(2);
    await tx.end();
  });

  it('drops one staged layer, then all the others, leaving no temporary object', async () => {
    const { t, tx, up } = await uploader();
    const a = await up.upload({ stream: Readable.from([layer]), what: 'layer a' });
    await up.upload({ stream: Readable.from([Buffer.concat([layer, Buffer.alloc(512)])]), what: 'layer b' });
    await up.drop(a);
    expect(up.staged).toHaveLength(1);
    expect(up.uploadedBytes).toBe(up.staged[0]!.size);
    expect(tempObjects(t)).toHaveLength(1);
    await up.dropAll();
    expect(up.staged).toEqual([]);
    expect(tempObjects(t)).toEqual([]);
    await tx.end();
  });

  it('names the archive and the layer when the layer cannot be read', async () => {
    const { tx, up } = await uploader();
    const broken = new Readable({ read() { this.destroy(new Error('disk went away')); } });
    await expect(up.upload({ stream: broken, declared: 'none', what: 'layer z' })).rejects.toMatchObject({ code: 'BAD_INPUT', message: 'app.tar: layer z: disk went away' });
    expect(up.staged).toEqual([]);
    await tx.end();
  });

  const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });

  it('a full disk under the layer as it is read (a spool in TMPDIR) is this host\'s fault (IO), not a bad archive', async () => {
    const { tx, up } = await uploader();
    const spool = new Readable({ read() { this.destroy(enospc()); } });
    await expect(up.upload({ stream: spool, declared: 'none', what: 'layer z' })).rejects.toMatchObject({ code: 'IO', message: 'app.tar: layer z: no space left on device; free space, then run again' });
    await tx.end();
  });

  it('a full disk under the repository is the cause named (IO), not the read it cut short ("Premature close")', async () => {
    const { tx, up } = await uploader();
    vi.spyOn(tx, 'stageBlob').mockImplementation(async (stream) => {
      (stream as Readable).destroy();
      throw enospc();
    });
    await expect(up.upload({ stream: Readable.from([layer]), what: 'layer z' })).rejects.toMatchObject({ code: 'IO', message: 'app.tar: layer z: no space left on device; free space, then run again' });
    await tx.end();
  });

  it('an encrypted layer that fails while its session key is being sealed fails its upload, and nothing goes unheard', async () => {
    const dir = await tempDir();
    const pair = await generateKeyPair('unit <u@example.invalid>', { type: 'ecc' });
    await writeFile(join(dir, 'pub'), pair.publicKey);
    const t = new MemoryTransport();
    const tx = await new Repository(t).begin({ create: true });
    const up = new LayerUploader(tx, 'app.tar', 'zstd', await loadRecipients([join(dir, 'pub')]), undefined);
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    // the encrypting stream has no reader until the session key is sealed (asynchronous work)
    const emit = vi.spyOn(Transform.prototype, 'emit');
    try {
      const broken = new Readable({ read() { this.destroy(new Error('disk went away')); } });
      await expect(up.upload({ stream: broken, declared: 'none', what: 'layer e' })).rejects.toMatchObject({ code: 'BAD_INPUT', message: 'app.tar: layer e: disk went away' });
      await new Promise((r) => setTimeout(r, 50));
      expect(emit.mock.calls.filter(([ev]) => ev === 'error').length).toBeGreaterThan(0);
      expect(emit.mock.results.filter((r) => r.type === 'throw')).toEqual([]);
      expect(unhandled).toEqual([]);
    } finally {
      emit.mockRestore();
      process.off('unhandledRejection', onUnhandled);
    }
    expect(up.staged).toEqual([]);
    await tx.end();
  });
});
