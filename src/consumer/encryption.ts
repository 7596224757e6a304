// The consumer's side of encrypted releases: what it expects to be encrypted, how much a decrypted
// object may hold, and how decrypted bytes reach the daemon only once their MDC is verified.

import { createReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { Readable, Transform, type Duplex } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { CodecError, feedFile, type Compression, type Follow } from '../archive/index.js';
import { DigestCheck, Verifier, decryptStream, type DecryptionKey } from '../crypto/index.js';
import { TarportError } from '../errors.js';
import { MAX_SMALL_BLOB_BYTES, type LayerDescriptor, type ReleaseRecord } from '../repo/index.js';

/** The record does not say how large a config is once decrypted: as large as a plain one may be. */
export const MAX_CONFIG_BYTES = MAX_SMALL_BLOB_BYTES;

/**
 * What decrypting a layer may yield: its compressed form, which no compression makes much larger
 * than the uncompressed size the record declares (gzip and zstd add well under 1/64 to data they
 * cannot compress), plus room for headers.
 */
export function layerPlaintextLimit(l: LayerDescriptor): number {
  return l.uncompressedSize + Math.ceil(l.uncompressedSize / 64) + (1 << 20);
}

/** The warning every run of pull and poll prints when releases are decrypted but not authenticated. */
export function unauthenticatedWarning(opts: { decryptKey?: unknown; trust?: readonly unknown[] }): string | undefined {
  if (!opts.decryptKey || opts.trust?.length) return undefined;
  return (
    '--decrypt-key without --trust: releases are NOT authenticated. Anyone who can write to the ' +
    "repository and has the recipient's public key can publish an image this host will load; " +
    'pin the producer key with --trust (docs/trust.md)'
  );
}

/**
 * With --decrypt-key, every layer and config of a release must be encrypted: a record that drops
 * `encryption` from an object would otherwise have the consumer load plaintext that nobody
 * encrypted to it. --allow-unencrypted lifts this (a repository that mixes both).
 */
export function checkEncrypted(record: ReleaseRecord, opts: { decryptKey?: unknown; allowUnencrypted?: boolean }): void {
  if (!opts.decryptKey || opts.allowUnencrypted) return;
  const ref = `${record.name}:${record.tag} v${record.version}`;
  const platforms = record.index?.platforms ?? [];
  // every object that may load: a multi-platform release loads its platform's own layers, each
  // of which must be encrypted too (not only those of the record's top-level list)
  const layers = [...record.layers, ...platforms.flatMap((p) => p.layers)];
  const plain = [
    ...(record.config && !record.config.encryption ? [`its config ${record.config.digest}`] : []),
    ...platforms.filter((p) => !p.config.encryption).map((p) => `its config ${p.config.digest}`),
    ...[...new Set(layers.filter((l) => !l.encryption).map((l) => `layer ${l.diffId}`))],
  ];
  if (plain.length === 0) return;
  throw new TarportError(
    'UNTRUSTED',
    `${ref}: ${plain.join(', ')} ${plain.length > 1 ? 'are' : 'is'} not encrypted, and --decrypt-key expects encrypted releases; refusing (pass --allow-unencrypted to load unencrypted releases as well)`,
    { retryable: false },
  );
}

/** A decrypted config: whole in memory, so capped (its MDC is verified before this returns). */
export async function decryptConfig(stored: Buffer, key: DecryptionKey, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await decryptStream(Readable.from([stored]), key, what, { maxBytes: MAX_CONFIG_BYTES })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A stored object as a local file: the cache's (checked when it was fetched), or one read in place
 * from a local repository, checked on the way against `expect` (`what` names it in the fault).
 */
export interface ObjectFile {
  readonly file: string;
  readonly expect?: { readonly digest: string; readonly size: number; readonly what: string };
  /** The file is being downloaded, checked by its writer: read as it grows (Download in cache.ts). */
  readonly growing?: Growing;
}

/** A file being written and checked by its writer, which says what can be read (Download in cache.ts). */
export interface Growing extends Follow {
  open(): Promise<FileHandle>;
  /** The file's bytes as they may be read, ending once the writer verified the whole. */
  stream(signal?: AbortSignal): Readable;
}

/**
 * A layer's uncompressed tar, from its stored object, refused as soon as it yields more than the
 * record declares. For an encrypted layer the last bytes wait for the decryptor's verdict: a
 * decompressor that stops at the end of its frame, or a reader that stops at the size it expects,
 * cannot see the layer end cleanly over a message whose MDC then fails. For an object checked on
 * the way (`expect`) they wait for its digest check the same way.
 * `raw` may name a local file: a compressed plain layer is then fed to its decompressor from a few
 * reused buffers (feedFile), which saves more CPU than zstd's own work. A file still downloading
 * (`growing`) is read as it is written; its writer holds its last byte until the whole matched its
 * digest, so the layer cannot end before that.
 */
export async function openLayer(
  raw: Readable | ObjectFile,
  l: LayerDescriptor,
  key: DecryptionKey | undefined,
  what: string,
  decompressor: (c: Compression) => Promise<Duplex>,
  explain: (fault: unknown) => Promise<unknown> = async (fault) => fault,
): Promise<Readable> {
  // a decompressor is done with a chunk when it calls back; a pass-through ('none') is not
  const feed = !(raw instanceof Readable) && !l.encryption && l.compression !== 'none' ? raw.file : undefined;
  const expect = raw instanceof Readable ? undefined : raw.expect;
  const growing = raw instanceof Readable ? undefined : raw.growing;
  // ciphertext is decrypted only once its digest matched (the cache's, or readChecked's)
  if (growing && l.encryption) throw new TarportError('INTERNAL', `internal error: ${what} is encrypted and was to be read as it downloads`);
  let src: Readable | undefined = raw instanceof Readable ? raw : feed === undefined ? (growing ? growing.stream() : readChecked(raw)) : undefined;
  // a fed object's digest is known once the feed ended: its check is the verdict the last bytes wait for
  const check = feed !== undefined && expect ? new DigestCheck(expect, expect.what) : undefined;
  let verdict: Promise<void> = Promise.resolve();
  if (l.encryption && src) {
    if (!key) throw new TarportError('INTERNAL', `internal error: ${what} is encrypted and no key was passed`);
    src = await decryptStream(src, key, what, { maxBytes: layerPlaintextLimit(l) });
    verdict = finished(src);
    verdict.catch(() => undefined); // seen through the gate
  }
  // a growing file opens before the decompressor exists: a download that failed meanwhile leaves none behind
  const fed = src ? undefined : growing ? await growing.open() : feed!;
  const dec = await decompressor(l.compression).catch(async (e: unknown) => {
    if (typeof fed === 'object') await fed.close();
    throw e;
  });
  const feeding = src ? pipeline(src, dec) : feedFile(fed!, dec, { ...(check ? { onChunk: (_n: number, c: Buffer) => check.update(c) } : {}), ...(growing ? { follow: growing } : {}) }).then(() => check?.finish());
  if (check || growing) verdict = feeding;
  verdict.catch(() => undefined); // seen through the gate
  const out = gate(l.uncompressedSize, verdict, what);
  // A fault of the source or the decompressor reaches the reader as `explain` says it (a tampered
  // object read in place fails the decompressor before its digest check ends: see pull.ts).
  let failed = false;
  // a stored layer that does not decode as its record says, with nothing better to say of it (its
  // digest), is the repository's fault (exit 3, and the poll agent skips it), not a bad input file
  // of this host's (exit 2, tried again every round)
  const asStored = (e: unknown) => (e instanceof CodecError ? new TarportError('INTEGRITY', `${what}: does not decode as its record says (${l.compression}): ${e.message}`, { cause: e, retryable: false }) : e);
  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    explain(e).then(
      (x) => out.destroy(asStored(x) as Error),
      () => out.destroy(asStored(e) as Error),
    );
  };
  feeding.catch(fail);
  dec.on('error', fail);
  dec.pipe(out);
  out.on('close', () => dec.destroy());
  return out;
}

/** A local file as a stream, checked against its digest on the way when it is to be (ObjectFile). */
function readChecked(raw: ObjectFile): Readable {
  const file = createReadStream(raw.file, { highWaterMark: 1 << 20 });
  if (!raw.expect) return file;
  const v = new Verifier(raw.expect, raw.expect.what);
  pipeline(file, v).catch(() => undefined); // a read fault reaches the reader through v
  return v;
}

/**
 * Passes chunks on one behind, failing past `limit` bytes; the last chunk goes out (and the stream
 * ends) once `verdict` resolves.
 */
function gate(limit: number, verdict: Promise<void>, what: string): Transform {
  let held: Buffer | undefined;
  let n = 0;
  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb) {
      n += chunk.length;
      if (n > limit) return cb(new TarportError('DIGEST_MISMATCH', `${what}: decompresses to more than the ${limit} bytes the record declares`));
      const out = held;
      held = chunk;
      cb(null, out);
    },
    flush(cb) {
      verdict.then(
        () => cb(null, held),
        (e: unknown) => cb(e as Error),
      );
    },
  });
}
