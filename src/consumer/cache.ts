import { createReadStream } from 'node:fs';
import { open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { makeFolders } from '../folders.js';
import { feedFile, type Follow } from '../archive/index.js';
import { DigestCheck, hexOf } from '../crypto/index.js';
import { TarportError, wrapSystemError } from '../errors.js';
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

  /** A download of the object that a reader can follow as it is written (ensure's `follow`). */
  follow(desc: { digest: string; size: number }): Download {
    return new Download(desc.size, this.final(desc.digest));
  }

  /**
   * Makes sure the object is in the cache; returns the bytes read from the repository. `follow`
   * hears of every byte written and of the outcome, whatever it is.
   */
  async ensure(repo: Repository, desc: { digest: string; size: number }, signal?: AbortSignal, follow?: Download): Promise<number> {
    try {
      const n = await this.fetch(repo, desc, signal, follow);
      follow?.end();
      return n;
    } catch (e) {
      follow?.end(e);
      throw e;
    }
  }

  private async fetch(repo: Repository, desc: { digest: string; size: number }, signal?: AbortSignal, follow?: Download): Promise<number> {
    if (await this.has(desc)) return 0;
    const partialDir = join(this.dir, 'partial');
    await makeFolders(partialDir);
    await makeFolders(join(this.dir, 'blobs'));
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
      let written = offset;
      follow?.begin(part, offset);
      // the repository lends its buffers (FTP reads into two of its own): each is hashed and
      // written before it goes back. A partial file that is whole (a run cut between its last
      // write and the rename) needs no read: a server refuses a range that starts at the end.
      const sink = async (chunk: Buffer) => {
        check.update(chunk);
        await writeAll(out, chunk);
        follow?.wrote((written += chunk.length));
      };
      const fetched = offset < desc.size ? await repo.readBlobTo(desc, sink, { offset, ...(signal ? { signal } : {}) }) : 0;
      // a read that ended early without a fault (a server or proxy that closed the body as if it
      // were whole) is a cut: the bytes kept are good so far, and the next attempt resumes after them
      if (check.bytes < desc.size) {
        throw new TarportError('CONNECTION', `download ${desc.digest} from ${repo.location}: the transfer ended after ${check.bytes} of ${desc.size} bytes`, { retryable: true });
      }
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

  /** Removes every cached object not in `keep`; says what could not be removed (the cache then grows). */
  async prune(keep: ReadonlySet<string>): Promise<string[]> {
    const dir = join(this.dir, 'blobs');
    const names = await readdir(dir).catch(() => [] as string[]);
    const problems: string[] = [];
    for (const n of names) {
      if (!keep.has(`sha256:${n}`)) await rm(join(dir, n), { force: true }).catch((e: unknown) => problems.push(wrapSystemError(e, `prune the cache (${join(dir, n)})`).message));
    }
    return problems;
  }
}

/**
 * An object's download into the cache as a reader follows it: every byte but the last can be read
 * once it is written; the last only once the whole object matched its digest and lies in place. A
 * reader therefore never sees the object end before it is verified, and a download that fails
 * (a digest mismatch, a cut link) fails the reader with the download's fault. This lets the
 * runtime take a layer while it downloads, as the load archive's index comes last and a stream that
 * fails before it loads nothing.
 */
export class Download implements Follow {
  private bytes = 0;
  private partial: string | undefined;
  private outcome: { fault: unknown } | 'verified' | undefined;
  private wake: (() => void)[] = [];
  private markStarted!: () => void;
  /** Settles once the download began writing, or ended without (the object was in the cache already, or it failed). */
  readonly started = new Promise<void>((resolve) => (this.markStarted = resolve));

  constructor(
    readonly size: number,
    private readonly final: string,
  ) {}

  /** Bytes in the partial file so far (what a resumed download had, and what it wrote since). */
  get written(): number {
    return this.bytes;
  }

  /** ensure: the partial file is open for writing and holds `offset` bytes already. */
  begin(partial: string, offset: number): void {
    this.partial = partial;
    this.wrote(offset);
    this.markStarted();
  }

  /** ensure: the partial file holds `total` bytes. */
  wrote(total: number): void {
    this.bytes = total;
    this.notify();
  }

  /** ensure: the object is verified and in place, or the download failed with `fault`. The first call counts. */
  end(fault?: unknown): void {
    if (this.outcome !== undefined) return;
    this.outcome = fault === undefined ? 'verified' : { fault };
    this.markStarted();
    this.notify();
  }

  /**
   * Bytes a reader at `position` may read: once `wanted` are there, or all but the last byte (the
   * rest waits for the verdict); 0 once the object is verified and read to its end.
   */
  async readable(position: number, wanted = 1): Promise<number> {
    for (;;) {
      if (this.outcome === 'verified') return Math.max(0, this.size - position);
      if (this.outcome) throw this.outcome.fault;
      const now = Math.min(this.written, this.size - 1) - position;
      if (now > 0 && (now >= wanted || this.written >= this.size - 1)) return now;
      await new Promise<void>((resolve) => this.wake.push(resolve));
    }
  }

  /** The file to read from (once `started`): the partial file while it is written, else the object. */
  async open(): Promise<FileHandle> {
    await this.started;
    if (typeof this.outcome === 'object') throw this.outcome.fault;
    if (this.outcome === undefined && this.partial !== undefined) {
      // renamed into place since: the object is complete (a failed download reports its fault)
      const fh = await open(this.partial, 'r').catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        return undefined;
      });
      if (fh) return fh;
      await this.readable(this.size);
    }
    return open(this.final, 'r');
  }

  /** The object's bytes as they arrive (each read lends a fresh buffer: a pass-through keeps them). */
  stream(signal?: AbortSignal): Readable {
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    // A fault may come before the reader attaches (a download that ended with one): unheard, its
    // 'error' would end the agent. It stays on the stream for the reader's pipeline or iterator.
    out.on('error', () => undefined);
    this.open().then(
      (fh) => feedFile(fh, out, { follow: this, lend: true, ...(signal ? { signal } : {}) }),
      (e: unknown) => out.destroy(e as Error),
    ).catch(() => undefined); // feedFile destroys `out` with its fault
    return out;
  }

  private notify(): void {
    const woken = this.wake;
    this.wake = [];
    for (const w of woken) w();
  }
}

/** Writes all of `buf` at the file's position (a write may take only part of it). */
async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}
