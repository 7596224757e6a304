import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { DigestCheck, hexOf } from '../crypto/index.js';
import { wrapSystemError } from '../errors.js';
import type { Repository } from '../repo/index.js';

/**
 * The consumer's local object cache: objects are downloaded to a partial file, hashed as they are
 * written, and renamed into place only when digest and size match. A partial download resumes.
 */
export class ObjectCache {
  constructor(readonly dir: string) {}

  private final(digest: string): string {
    return join(this.dir, 'blobs', hexOf(digest));
  }

  async has(desc: { digest: string; size: number }): Promise<boolean> {
    const st = await stat(this.final(desc.digest)).catch(() => undefined);
    return st !== undefined && st.size === desc.size;
  }

  /** Makes sure the object is in the cache; returns the bytes read from the repository. */
  async ensure(repo: Repository, desc: { digest: string; size: number }, signal?: AbortSignal): Promise<number> {
    if (await this.has(desc)) return 0;
    const partialDir = join(this.dir, 'partial');
    await mkdir(partialDir, { recursive: true });
    await mkdir(join(this.dir, 'blobs'), { recursive: true });
    const part = join(partialDir, hexOf(desc.digest));
    let offset = (await stat(part).catch(() => undefined))?.size ?? 0;
    if (offset > desc.size) {
      await rm(part, { force: true });
      offset = 0;
    }
    const check = new DigestCheck(desc, `object ${desc.digest} from ${repo.location}`);
    let fh: FileHandle | undefined;
    try {
      // the bytes we already have go through the check first, then the rest from the repository
      if (offset > 0) for await (const c of createReadStream(part, { highWaterMark: 1 << 20 })) check.update(c as Buffer);
      fh = await open(part, offset > 0 ? 'a' : 'w');
      const out = fh;
      // the repository lends its buffers (FTP reads into two of its own): each is hashed and
      // written before it goes back
      const fetched = await repo.readBlobTo(
        desc,
        async (chunk) => {
          check.update(chunk);
          await writeAll(out, chunk);
        },
        { offset, ...(signal ? { signal } : {}) },
      );
      check.finish();
      await fh.close();
      fh = undefined;
      await rename(part, this.final(desc.digest));
      return fetched;
    } catch (e) {
      await fh?.close().catch(() => undefined);
      // a digest mismatch means the partial file is poison: drop it; a cut connection keeps it
      if ((e as { code?: string }).code === 'DIGEST_MISMATCH') await rm(part, { force: true });
      throw wrapSystemError(e, `download ${desc.digest} from ${repo.location}`);
    }
  }

  /** The stored object's file, for a reader that reads it itself (feedFile). */
  file(digest: string): { file: string } {
    return { file: this.final(digest) };
  }

  open(digest: string): Readable {
    return createReadStream(this.final(digest), { highWaterMark: 1 << 20 });
  }

  /** Removes every cached object not in `keep`. */
  async prune(keep: ReadonlySet<string>): Promise<void> {
    const dir = join(this.dir, 'blobs');
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const n of names) {
      if (!keep.has(`sha256:${n}`)) await rm(join(dir, n), { force: true }).catch((e: unknown) => wrapSystemError(e, 'prune cache'));
    }
  }
}

/** Writes all of `buf` at the file's position (a write may take only part of it). */
async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}
