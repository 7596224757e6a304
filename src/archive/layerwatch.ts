import { createHash, type Hash } from 'node:crypto';
import { sniffCompression } from './compression.js';
import { HeaderDecoder, isTarHeader, isZeroBlock } from './tarheader.js';

/** An entry shaped as an image layer, seen whole as the archive went by. */
export interface WatchedLayer {
  /** Normalized entry name (`<id>/layer.tar`, `blobs/sha256/<hex>`). */
  readonly name: string;
  /** Offset of its data in the archive. */
  readonly offset: number;
  readonly size: number;
  /** `sha256:<hex>` of its bytes as stored: an uncompressed layer's diff_id. */
  readonly digest: string;
  /**
   * What its first bytes say it is: `tar` (an uncompressed layer, whose digest is its diff_id),
   * `gzip` or `zstd` (a compressed layer), or `other` (a config, a manifest, an empty layer).
   */
  readonly form: 'tar' | 'gzip' | 'zstd' | 'other';
}

/**
 * Where image archives keep their layers: docker save's legacy layout (`<id>/layer.tar`, podman's
 * docker-archive too) and an OCI layout's blobs (docker save since Docker 25, ctr, skopeo, buildx).
 * The OCI blobs also hold configs and manifests; those are small and are only hashed.
 */
const LAYER_SHAPED = [/^[^/]+\/layer\.tar$/, /^blobs\/[a-z0-9]+\/[a-f0-9]{32,128}$/];

type State =
  | { kind: 'header' }
  | { kind: 'meta'; size: number; parts: Buffer[]; got: number }
  | { kind: 'layer'; name: string; offset: number; size: number; left: number; hash: Hash; head: Buffer[]; headBytes: number }
  | { kind: 'skip'; left: number }
  | { kind: 'ended' };

/**
 * Follows a plain tar archive as it is written (standard input being copied to a file, `push -`) and
 * reports each layer-shaped entry once its last byte went by, with the SHA-256 of its bytes, so that
 * a producer can store a layer while the rest of the archive still comes. It only ever helps: it
 * stops following, silently, at whatever it does not take as a plain tar (a compressed archive, a
 * bad header, an extended header it refuses), and the archive reader (tar.ts), which indexes the
 * finished file, stays the judge of the archive. Its memory is one header block and one extended
 * header (HEADER_LIMITS); it copies no data.
 */
export class LayerWatch {
  private state: State = { kind: 'header' };
  private readonly decoder = new HeaderDecoder();
  private block = Buffer.alloc(512);
  private blockFill = 0;
  private pos = 0;
  /** Why it stopped following before the archive's end, if it did. */
  stopped: string | undefined;
  private readonly seen: WatchedLayer[] = [];
  private closed = false;
  private wake: (() => void) | undefined;

  /** No more bytes come (the copy ended, or failed): `layers()` ends once it gave what it has. */
  end(): void {
    this.closed = true;
    this.wake?.();
  }

  /** The layers seen whole, in archive order, as they come; for one reader. */
  async *layers(): AsyncGenerator<WatchedLayer> {
    for (;;) {
      const l = this.seen.shift();
      if (l) {
        yield l;
        continue;
      }
      if (this.closed) return;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }

  /** The archive's next bytes, in order. */
  write(chunk: Buffer): void {
    if (this.closed) return;
    let at = 0;
    while (at < chunk.length && this.state.kind !== 'ended') {
      const was = this.state.kind;
      try {
        at += this.step(chunk, at);
      } catch (e) {
        // whatever it is, the copy goes on: the archive reader judges the file
        this.stop(`${was === 'header' ? `the header at byte ${this.pos - 512}` : `the extended header ending at byte ${this.pos}`}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  /** Consumes bytes of `chunk` from `at` for the current state; returns how many. */
  private step(chunk: Buffer, at: number): number {
    const s = this.state;
    switch (s.kind) {
      case 'header':
        return this.fillBlock(chunk, at);
      case 'meta': {
        const n = Math.min(s.size - s.got, chunk.length - at);
        s.parts.push(Buffer.from(chunk.subarray(at, at + n)));
        s.got += n;
        this.pos += n;
        if (s.got === s.size) {
          this.decoder.meta(Buffer.concat(s.parts));
          this.state = { kind: 'skip', left: pad(s.size) };
        }
        return n;
      }
      case 'layer':
        return this.hashLayer(s, chunk, at);
      case 'skip': {
        const n = Math.min(s.left, chunk.length - at);
        s.left -= n;
        this.pos += n;
        if (s.left === 0) this.state = { kind: 'header' };
        return n;
      }
      case 'ended':
        return chunk.length - at;
    }
  }

  private fillBlock(chunk: Buffer, at: number): number {
    const n = Math.min(512 - this.blockFill, chunk.length - at);
    chunk.copy(this.block, this.blockFill, at, at + n);
    this.blockFill += n;
    this.pos += n;
    if (this.blockFill === 512) {
      this.blockFill = 0;
      this.onHeader(this.block);
    }
    return n;
  }

  private onHeader(block: Buffer): void {
    if (isZeroBlock(block)) {
      this.state = { kind: 'ended' };
      return;
    }
    const step = this.decoder.header(block);
    if (step.meta) {
      this.state = step.size === 0 ? { kind: 'header' } : { kind: 'meta', size: step.size, parts: [], got: 0 };
      if (step.size === 0) this.decoder.meta(Buffer.alloc(0));
      return;
    }
    const e = step.entry;
    if (e.type === 'file' && !e.sparse && e.size > 0 && LAYER_SHAPED.some((r) => r.test(e.name))) {
      this.state = { kind: 'layer', name: e.name, offset: this.pos, size: e.size, left: e.size, hash: createHash('sha256'), head: [], headBytes: 0 };
    } else {
      this.state = { kind: 'skip', left: e.size + pad(e.size) };
      if (this.state.left === 0) this.state = { kind: 'header' };
    }
  }

  private hashLayer(s: Extract<State, { kind: 'layer' }>, chunk: Buffer, at: number): number {
    const n = Math.min(s.left, chunk.length - at);
    const part = chunk.subarray(at, at + n);
    s.hash.update(part);
    if (s.headBytes < 512) {
      const h = part.subarray(0, 512 - s.headBytes);
      s.head.push(Buffer.from(h));
      s.headBytes += h.length;
    }
    s.left -= n;
    this.pos += n;
    if (s.left === 0) {
      const layer: WatchedLayer = { name: s.name, offset: s.offset, size: s.size, digest: 'sha256:' + s.hash.digest('hex'), form: formOf(Buffer.concat(s.head)) };
      this.state = { kind: 'skip', left: pad(s.size) };
      if (this.state.left === 0) this.state = { kind: 'header' };
      this.seen.push(layer);
      this.wake?.();
    }
    return n;
  }

  private stop(why: string): void {
    this.stopped = why;
    this.state = { kind: 'ended' };
  }
}

const pad = (size: number) => (512 - (size % 512)) % 512;

function formOf(head: Buffer): WatchedLayer['form'] {
  const c = sniffCompression(head);
  if (c !== 'none') return c;
  if (head.length < 512 || isZeroBlock(head)) return 'other';
  return isTarHeader(head) ? 'tar' : 'other';
}
