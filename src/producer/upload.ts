import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MAX_RATIO, bombGuard, compressor, decompressor, sniffStream, type Compression } from '../archive/index.js';
import { Digester, encryptStream, type TrustedKey } from '../crypto/index.js';
import { TarportError, isSystemError, wrapSystemError } from '../errors.js';
import { MEDIA_TYPES, type Encryption, type LayerDescriptor, type StagedBlob, type WriteTransaction } from '../repo/index.js';

/** A layer stored under a temporary name, not yet part of the repository. */
export interface Uploaded {
  readonly layer: LayerDescriptor;
  readonly blob: StagedBlob;
}

export interface LayerSource {
  readonly stream: Readable;
  /** The archive's word on its compression; sniffed when absent. */
  readonly declared?: Compression;
  /** What messages call it (`layer <entry>`). */
  readonly what: string;
  /** Uncompressed bytes, when known: the compressor sizes its frame from it. */
  readonly sizeHint?: number;
  /**
   * Its diff_id and size, already computed over these very bytes (an uncompressed layer hashed as
   * it was copied: LayerWatch): not hashed again. The stream must be plain (`declared: 'none'`).
   */
  readonly hashed?: { readonly diffId: string; readonly size: number };
}

/**
 * Stores layers for one publish: (decompress) → diff_id → compress → (encrypt) → a temporary
 * object of the write transaction. Keeps what it staged so that the publish can make it visible,
 * or drop it.
 */
export class LayerUploader {
  readonly staged: StagedBlob[] = [];

  constructor(
    private readonly tx: WriteTransaction,
    /** The archive, as messages name it. */
    private readonly path: string,
    private readonly compression: Compression,
    private readonly encryptTo: readonly TrustedKey[] | undefined,
    private readonly signal: AbortSignal | undefined,
    /** bombGuard's ratio for a compressed layer (`--max-expansion`; 0: no limit). */
    private readonly maxExpansion = MAX_RATIO,
  ) {}

  get encryption(): Encryption | undefined {
    return this.encryptTo?.length ? { scheme: 'openpgp', recipients: this.encryptTo.map((k) => k.fingerprint).sort() } : undefined;
  }

  /** Bytes of the new objects staged and kept (a layer dropped again is not counted). */
  get uploadedBytes(): number {
    return this.staged.reduce((n, b) => n + (b.uploaded ? b.size : 0), 0);
  }

  async upload(src: LayerSource): Promise<Uploaded> {
    const inComp = src.hashed ? 'none' : (src.declared ?? (await sniffStream(src.stream)));
    const diff = src.hashed ? undefined : new Digester();
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    const guard = bombGuard(this.maxExpansion); // a compressed layer that expands without end is refused, not read for hours
    const hashing = diff ?? new PassThrough({ highWaterMark: 1 << 20 });
    const sizeHint = inComp === 'none' ? (src.hashed?.size ?? src.sizeHint) : undefined;
    const feeding = pipeline(src.stream, guard.input, decompressor(inComp), guard.output, hashing, compressor(this.compression, sizeHint), out, { ...(this.signal ? { signal: this.signal } : {}) });
    // awaited below, after the session key is sealed: a read that fails before then is no unhandled rejection
    feeding.catch(() => undefined);
    let blob: StagedBlob;
    try {
      const stored = this.encryptTo?.length ? await encryptStream(out, this.encryptTo) : out;
      const [b, f] = await Promise.allSettled([this.tx.stageBlob(stored), feeding]);
      // the upload runs while the layer is read (stageBlob): when it fails, the read it cut short
      // fails too ("Premature close"), but the upload's own error (a TarportError) is the cause. A
      // system call that failed on either side (a full disk) is this host's fault, not the
      // archive's: IO, and the file is kept for another try
      if (b.status === 'rejected' && b.reason instanceof TarportError) throw b.reason;
      const sys = [b, f].map((r) => (r.status === 'rejected' ? r.reason : undefined)).find(isSystemError);
      if (sys) throw wrapSystemError(sys, `${this.path}: ${src.what}`);
      if (f.status === 'rejected') throw f.reason;
      if (b.status === 'rejected') throw b.reason;
      blob = b.value;
    } catch (e) {
      out.destroy();
      src.stream.destroy();
      if (e instanceof TarportError) throw e;
      throw new TarportError('BAD_INPUT', `${this.path}: ${src.what}: ${(e as Error).message}`, { cause: e });
    }
    this.staged.push(blob);
    const encryption = this.encryption;
    const layer: LayerDescriptor = {
      mediaType: MEDIA_TYPES.layer[this.compression] + (encryption ? '+encrypted' : ''),
      digest: blob.digest,
      size: blob.size,
      diffId: src.hashed?.diffId ?? diff!.digest(),
      uncompressedSize: src.hashed?.size ?? diff!.bytes,
      compression: this.compression,
      ...(encryption ? { encryption } : {}),
    };
    return { layer, blob };
  }

  /** Drops a staged layer (the repository holds it already, or no image of the archive names it). */
  async drop(u: Uploaded): Promise<void> {
    const i = this.staged.indexOf(u.blob);
    if (i >= 0) this.staged.splice(i, 1);
    await this.tx.discard(u.blob);
  }

  /** Drops every staged layer (the publish failed). */
  async dropAll(): Promise<void> {
    for (const b of this.staged.splice(0)) await this.tx.discard(b);
  }
}
