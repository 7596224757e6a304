import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Verifier, hexOf } from '../crypto/index.js';
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
    const verifier = new Verifier(desc, `object ${desc.digest} from ${repo.location}`);
    try {
      // the bytes we already have go through the verifier first, then the rest from the repository
      if (offset > 0) for await (const c of createReadStream(part, { highWaterMark: 1 << 20 })) verifier.absorb(c as Buffer);
      const remote = await repo.readBlob(desc, { offset, signal, verify: false });
      let fetched = 0;
      remote.on('data', (c: Buffer) => (fetched += c.length));
      await pipeline(remote, verifier, createWriteStream(part, { flags: offset > 0 ? 'a' : 'w', highWaterMark: 1 << 20 }), { signal });
      await rename(part, this.final(desc.digest));
      return fetched;
    } catch (e) {
      // a digest mismatch means the partial file is poison: drop it; a cut connection keeps it
      if ((e as { code?: string }).code === 'DIGEST_MISMATCH') await rm(part, { force: true });
      throw wrapSystemError(e, `download ${desc.digest} from ${repo.location}`);
    }
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
