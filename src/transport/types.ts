import type { Readable } from 'node:stream';

/** One entry of a folder listing. */
export interface ObjectInfo {
  /** The entry's name inside the listed folder (no slashes). */
  readonly name: string;
  readonly isDir: boolean;
  readonly size: number;
  readonly mtime?: Date;
}

export interface ReadOptions {
  /** First byte to read (resume). */
  readonly offset?: number;
  readonly signal?: AbortSignal;
}

export interface WriteOptions {
  readonly signal?: AbortSignal;
}

/**
 * What an upload sends: a function that opens a fresh stream for every attempt, or a local file.
 * A file lets a transport read it into buffers of its own and resume an upload at any byte without
 * reading what it skips.
 */
export type Source = (() => Readable) | { readonly file: string };

/**
 * Receives a download's bytes in order. The chunk is lent: the transport reuses its memory once the
 * call returned, or once the promise it returned settled, so a sink that keeps bytes must copy them.
 * A sink that throws (or rejects) stops the download with that error. Lending instead of handing out
 * fresh buffers spares an allocation per socket read, which at loopback speed costs more than the
 * transfer (tens of thousands of page faults per GiB on this kind of VM).
 */
export type ByteSink = (chunk: Buffer) => void | Promise<void>;

/**
 * A dumb store of files addressed by keys: '/'-separated paths relative to the location's root, never
 * starting with '/' and never containing '.' or '..' segments. A transport knows nothing of images,
 * repositories or crypto (DESIGN.md).
 *
 * Contract (every implementation passes test/transport-contract):
 * - `write` MUST create missing parent folders. It writes under the key as given; callers that need
 *   atomic visibility write to a temporary key in the same folder and `rename` it into place. A failed
 *   `write` MUST remove what it wrote so far.
 * - a Source function is called again for every attempt (a retry replays it, skipping what the server
 *   already holds), so it MUST return a fresh stream each time.
 * - `readTo` delivers the same bytes as `read`, in order, and stops when its sink fails.
 * - `rename` MUST replace an existing target (FTP servers do; file systems do).
 * - `stat` returns undefined for a missing key; it throws only when the store cannot answer.
 * - `list` of a missing folder yields nothing.
 * - `remove` of a missing key succeeds.
 */
export interface Transport {
  /** The location as a URL that is safe to print (no password). */
  readonly location: string;
  /**
   * atomicRename: rename replaces the target in one step, always (file systems; false where a
   * server may make it delete-then-rename, so that for a moment the target does not exist: FTP,
   * SFTP without posix-rename). repo/ reads it (docs/repo-format.md, "Renames"). maxConnections: transfers that may run at
   * once. local: the bytes are on this host (a directory or a mounted stick), so reading them again
   * costs no more than reading a local cache. readOnly: every write, rename and remove is refused
   * (a web mirror); commands that write say so before they start. atomicWrite: a `write` becomes
   * visible whole, replacing what the key held in one step, or not at all (S3: one PUT), so a file
   * that must never be seen half-written needs no temporary name and no rename.
   */
  readonly capabilities: Readonly<{ atomicRename: boolean; maxConnections: number; local: boolean; readOnly?: boolean; atomicWrite?: boolean }>;
  stat(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined>;
  list(folder: string, signal?: AbortSignal): AsyncIterable<ObjectInfo>;
  read(key: string, opts?: ReadOptions): Promise<Readable>;
  /** Like `read`, but delivers into `sink` (see ByteSink); resolves with the bytes delivered. */
  readTo(key: string, sink: ByteSink, opts?: ReadOptions): Promise<number>;
  write(key: string, source: Source, opts?: WriteOptions): Promise<{ size: number }>;
  rename(from: string, to: string, signal?: AbortSignal): Promise<void>;
  remove(key: string, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
  /**
   * Begins opening the connection now, so that its handshake (an SSH key exchange and login) runs
   * while the caller does local work, such as reading an archive or the consumer's state. Never
   * fails: a connection that cannot be made is reported by the first request, which tries again.
   * Transports without a costly handshake need not have it.
   */
  connectEarly?(): void;
  /**
   * Local transports only: the file that holds `key` on this host, so that a copy between two local
   * stores can run without a stream per byte (sync). Checked like any other access (no link out of
   * the repository); callers open it without following links, and still go through `rename`/`remove`.
   */
  localPath?(key: string, op: 'read' | 'write'): Promise<string>;
  /**
   * Local transports only: until the returned release is called, writes and renames fail (IO, not
   * retryable) once the location is no longer the folder it was when held: a stick unplugged or
   * unmounted leaves its mount point, an empty folder on the host's own disk. Holds nest.
   */
  hold?(): Promise<() => void>;
  /**
   * Local transports only, within a hold: from now until the returned release, a write or rename
   * also fails (IO, not retryable) once the file `key()` names (one the holder wrote, and keeps while
   * it writes) is missing: another medium at the same mount point can have the folder's device and
   * inode (the root of a FAT file system is always inode 1), not this file.
   */
  witness?(key: () => string): () => void;
}
