import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { TarportError } from '../errors.js';

export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

export function hexOf(digest: string): string {
  if (!isDigest(digest)) throw new TarportError('INTEGRITY', `not a sha256 digest: ${JSON.stringify(digest)}`);
  return digest.slice('sha256:'.length);
}

export function sha256(data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

/** A pass-through that hashes and counts what flows through it. Read `digest()` after the end. */
export class Digester extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private result: string | undefined;
  bytes = 0;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.result = 'sha256:' + this.hash.digest('hex');
    cb();
  }

  digest(): string {
    if (this.result === undefined) throw new TarportError('INTERNAL', 'internal error: digest read before the stream ended');
    return this.result;
  }
}

/**
 * Checks bytes against an expected digest and size, chunk by chunk: `update` throws at once when more
 * bytes arrive than expected (no endless data), `finish` at the end otherwise. `what` names the object.
 */
export class DigestCheck {
  private readonly hash = createHash('sha256');
  bytes = 0;

  constructor(
    private readonly expected: { digest: string; size: number },
    private readonly what: string,
  ) {}

  update(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    if (this.bytes > this.expected.size) {
      throw new TarportError('DIGEST_MISMATCH', `${this.what}: more bytes than the ${this.expected.size} declared`, { retryable: false });
    }
    this.hash.update(chunk);
  }

  /**
   * `shortIsCut`: bytes that came over a transfer; ending before the declared size is the transfer
   * cut short (CONNECTION, retryable), even where the server ended its answer as if it were whole,
   * not a damaged object: refused and skipped, a passing lie would keep a release out for good.
   */
  finish(shortIsCut = false): void {
    if (shortIsCut && this.bytes < this.expected.size) {
      throw new TarportError('CONNECTION', `${this.what}: the transfer ended after ${this.bytes} of ${this.expected.size} bytes`, { retryable: true });
    }
    if (this.bytes !== this.expected.size) {
      throw new TarportError('DIGEST_MISMATCH', `${this.what}: size mismatch, expected ${this.expected.size} bytes, got ${this.bytes}`, { retryable: false });
    }
    const got = 'sha256:' + this.hash.digest('hex');
    if (got !== this.expected.digest) {
      throw new TarportError('DIGEST_MISMATCH', `${this.what}: digest mismatch, expected ${this.expected.digest}, got ${got}`, { retryable: false });
    }
  }
}

/**
 * A pass-through that fails when the bytes do not match the expected digest and size (see
 * DigestCheck); over a link, a stream that ends short is a cut transfer (`shortIsCut`).
 */
export class Verifier extends Transform {
  private readonly check: DigestCheck;

  /** `shortIsCut`: the bytes come over a link (DigestCheck.finish); from a local file, a short one is damaged. */
  constructor(
    expected: { digest: string; size: number },
    what: string,
    private readonly shortIsCut = false,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.check = new DigestCheck(expected, what);
  }

  /** Counts bytes that were verified-and-kept earlier (a resumed download) without passing them on. */
  absorb(chunk: Buffer): void {
    this.check.update(chunk);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.check.update(chunk);
    } catch (e) {
      cb(e as Error);
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.check.finish(this.shortIsCut);
    } catch (e) {
      cb(e as Error);
      return;
    }
    cb();
  }
}
