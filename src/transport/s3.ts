import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { withSignal } from '../signals.js';
import { TarportError, messageOf } from '../errors.js';
import type { JournalEntry, UploadJournal } from './journal.js';
import { MAX_FOLDER_ENTRIES, keySegments } from './keys.js';
import { resumableInto, sinkStream, type SinkAttempt } from './resume.js';
import { closedByOwner, withRetries } from './retry.js';
import { readableFrom, sourceError } from './source.js';
import { TLS_TRUST_CODES } from './tls.js';
import type { ByteSink, ObjectInfo, ReadOptions, Source, Transport, WriteOptions } from './types.js';

export interface S3Location {
  readonly kind: 's3';
  readonly bucket: string;
  /** The key prefix of the repository inside the bucket ('' for the bucket's root). */
  readonly prefix: string;
}

export interface S3Options {
  /** An S3-compatible server (MinIO, Ceph RGW, …): http(s)://HOST[:PORT]; AWS's own when absent. */
  readonly endpoint?: string;
  /** The bucket's region; the SDK's own chain (AWS_REGION, shared config) when absent, else us-east-1. */
  readonly region?: string;
  /** Path-style addressing (http://HOST/BUCKET/KEY), which most S3-compatible servers need. */
  readonly pathStyle?: boolean;
  /** PEM file of a private CA for an https endpoint, trusted beside the system's roots. */
  readonly ca?: string;
  /** A connection silent this long while an answer or data is due is dropped; the transfer resumes. */
  readonly idleTimeoutMs?: number;
  readonly retries?: number;
  readonly onResume?: (at: number) => void;
  /** Ends the transport for good (the command's SIGTERM, SIGINT): every connection is dropped at once. */
  readonly signal?: AbortSignal;
  /** Bytes per part of a multipart upload (tests; at least 5 MiB on AWS). */
  readonly partSize?: number;
  /** Where a file's multipart upload is recorded, so that a later run resumes it (journal.ts). */
  readonly journal?: UploadJournal;
  /** A recorded upload the server refused on resume (unknown, aborted): it is sent afresh. */
  readonly onStaleUpload?: (uploadId: string, why: TarportError) => void;
  /** How long the SDK's credential chain may take (default: CREDENTIALS_LIMIT_IDLE_TIMEOUTS idle timeouts). */
  readonly credentialsLimitMs?: number;
}

/** An upload recorded in a journal: `entry.uploadId` empty until the server gave one. */
interface Resume {
  readonly journal: UploadJournal;
  readonly entry: JournalEntry;
}

export const DEFAULT_S3_IDLE_MS = 30_000;
/**
 * How long the SDK's credential chain may take to hand out credentials, in idle timeouts: a
 * `credential_process` of the shared config runs with no bound of its own (the SDK's exec has no
 * timeout), and an SSO or metadata endpoint may be slow. The default (a minute) covers a helper that
 * asks a vault or a token service.
 */
export const CREDENTIALS_LIMIT_IDLE_TIMEOUTS = 2;
/** The most keys a listing pages through below a folder (its entries are bounded by MAX_FOLDER_ENTRIES). */
const MAX_KEYS_BELOW = 50 * MAX_FOLDER_ENTRIES;
/** 16 MiB parts: few requests per layer, and at most 3 parts (48 MiB) in memory per upload. */
const PART_SIZE = 16 << 20;
/** S3 allows 10,000 parts: parts grow by one PART_SIZE every 1,000, so a stream of unknown length may reach ~880 GB. */
const PARTS_PER_STEP = 1000;
const MAX_PARTS = 10_000;
/** CopyObject copies at most 5 GiB; a larger object is renamed by streaming it (see rename). */
const MAX_COPY = 5 * 1024 ** 3;
const PARTS_IN_FLIGHT = 2;

/** SDK error names and HTTP statuses that mean the server or the link failed, not the request. */
const TRANSIENT_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'SlowDown', 'ServiceUnavailable', 'InternalError', 'Throttling', 'ThrottlingException', 'RequestTimeTooSkewed']);
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);
const AUTH_NAMES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'InvalidToken', 'AccountProblem']);

interface SdkError {
  name?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

/**
 * A repository in an S3 bucket (s3://BUCKET/PREFIX) on AWS or any S3-compatible server, through
 * @aws-sdk/client-s3 v3 and only the calls AWS, MinIO and Ceph RGW share (docs/s3.md): PutObject,
 * GetObject (with Range), HeadObject, ListObjectsV2, DeleteObject, CopyObject and the multipart
 * upload calls. Credentials come from the SDK's standard chain (environment, shared files), never
 * from flags.
 *
 * S3's guarantees, and what this transport makes of them:
 * - One PUT is atomic: an object is visible whole, with its final bytes, or not at all, and a new
 *   PUT replaces the old one in one step (AWS since 2020, MinIO and RGW: strong read-after-write).
 *   So `atomicWrite`: repo/ writes small files in place, without a temporary name.
 * - There are no folders and no rename. A folder is a key prefix (a listing with a delimiter), and
 *   `rename` is CopyObject then DeleteObject: the target is replaced in one step by the copy (so
 *   `atomicRename`), the source lingers until the delete. CopyObject takes at most 5 GiB; a larger
 *   object is copied by streaming it through this host.
 * - Large uploads go multipart; a part that fails is sent again, not the parts already confirmed.
 *   A failed upload is aborted, so no object appears; a server that keeps aborted parts (s3rver)
 *   keeps them invisible.
 * - Checksums: the SDK's default "flexible checksums" frame streamed bodies as aws-chunked, which
 *   some S3-compatible servers stored verbatim (46 bytes more, no error). Every body goes as a
 *   buffer of known length, and checksums only where the API requires them (WHEN_REQUIRED).
 * - Uploads are signed without a hash of their body (UNSIGNED-PAYLOAD, as curl and the SDK's
 *   streams send them): hashing every byte in SHA-256 before sending cost more than the transfer on
 *   a small host (docs/s3.md, "Speed"). Each body carries its Content-MD5 instead (native MD5 costs
 *   a fraction of that), so the server refuses a body damaged on a plain-http link rather than
 *   storing it; end to end, every object is verified by its digest on every read.
 */
export class S3Transport implements Transport {
  readonly capabilities = { atomicRename: true, atomicWrite: true, maxConnections: 4, local: false } as const;
  readonly location: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly root: string;
  private readonly idleMs: number;
  private readonly retries: number;
  private readonly partSize: number;
  private readonly stop: AbortController = new AbortController();

  constructor(
    loc: S3Location,
    private readonly opts: S3Options = {},
  ) {
    this.bucket = loc.bucket;
    this.root = loc.prefix.replace(/^\/+|\/+$/g, '');
    this.location = `s3://${loc.bucket}/${this.root}${opts.endpoint ? ` (${opts.endpoint})` : ''}`;
    this.idleMs = opts.idleTimeoutMs ?? DEFAULT_S3_IDLE_MS;
    this.retries = opts.retries ?? 5;
    this.partSize = opts.partSize ?? PART_SIZE;
    this.client = makeClient(opts, this.idleMs, this.stop.signal);
    opts.signal?.addEventListener('abort', () => this.stop.abort(opts.signal?.reason), { once: true });
  }

  private keyOf(key: string): string {
    const segs = keySegments(key);
    return this.root ? `${this.root}/${segs.join('/')}` : segs.join('/');
  }

  /** Runs `fn` with the signal of one operation: the caller's and the transport's own end (withSignal). */
  private scoped<T>(signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return withSignal([signal, this.stop.signal], fn);
  }

  /** One request, retried as its errors allow, under the operation's signal. */
  private run<T>(what: string, fn: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.scoped(signal, (s) => withRetries(() => fn(s), { retries: this.retries, classify: (e) => this.classify(e, what), signal: s }));
  }

  /** Maps an SDK or socket error to a typed one: from error names, codes and HTTP statuses only. */
  classify(e: unknown, what: string): TarportError {
    if (e instanceof TarportError) return e;
    const err = (e ?? {}) as SdkError;
    const name = err.name ?? '';
    const status = err.$metadata?.httpStatusCode;
    const code = errorCode(e);
    if (name === 'AbortError' || code === 'ABORT_ERR' || this.stop.signal.aborted) return new TarportError('ABORTED', `${what}: aborted`, { cause: e, retryable: false });
    if (name === 'NoSuchKey' || name === 'NotFound') return new TarportError('NOT_FOUND', `${what}: not found`, { cause: e, retryable: false });
    if (name === 'NoSuchBucket') return new TarportError('IO', `${what}: the bucket ${this.bucket} does not exist (tarport does not create buckets: create it with your S3 tools)`, { cause: e, retryable: false });
    if (name === 'CredentialsProviderError') {
      return new TarportError('CONFIG', `${what}: no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials`, { cause: e, retryable: false });
    }
    if (AUTH_NAMES.has(name) || status === 401 || status === 403) {
      // a refused HEAD has no body, so no error name of S3's own: the SDK calls it Unknown
      const why = name && name !== 'Unknown' ? name : `HTTP ${status}`;
      return new TarportError('IO', `${what}: access refused (${why}); check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the bucket's policy`, { cause: e, retryable: false });
    }
    if (code && TLS_TRUST_CODES.has(code)) {
      return new TarportError('UNTRUSTED', `${what}: the endpoint's TLS certificate is not trusted (${code}); give its CA with --ca FILE`, { cause: e, retryable: false });
    }
    if (code === 'ENOTFOUND') return new TarportError('CONNECTION', `${what}: host not found (check --s3-endpoint, or --s3-path-style for a server without bucket host names)`, { cause: e, retryable: false });
    // the server's MD5 of a body differs from its Content-MD5: damaged on the way, so sent again
    if (name === 'BadDigest') return new TarportError('CONNECTION', `${what}: the server received the body damaged (BadDigest)`, { cause: e, retryable: true });
    if (name === 'TimeoutError') return new TarportError('CONNECTION', `${what}: ${timeoutCause(code, this.idleMs)}`, { cause: e, retryable: true });
    if (TRANSIENT_NAMES.has(name) || (code && TRANSIENT_CODES.has(code)) || status === 408 || status === 429 || (status !== undefined && status >= 500)) {
      return new TarportError('CONNECTION', `${what}: ${messageOf(e) || name} (${code ?? name ?? status})`, { cause: e, retryable: true });
    }
    if (status === undefined && err.$retryable) return new TarportError('CONNECTION', `${what}: ${messageOf(e)}`, { cause: e, retryable: true });
    return new TarportError('IO', `${what}: ${messageOf(e) || name}${status ? ` (HTTP ${status})` : ''}`, { cause: e, retryable: false });
  }

  async stat(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    const k = this.keyOf(key);
    const what = `${this.location}: ${key}`;
    try {
      const r = await this.run(what, (s) => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: k }), { abortSignal: s }), signal);
      return { name: key.slice(key.lastIndexOf('/') + 1), isDir: false, size: r.ContentLength ?? 0, ...(r.LastModified ? { mtime: r.LastModified } : {}) };
    } catch (e) {
      const err = this.classify(e, what);
      if (err.code === 'NOT_FOUND') return undefined;
      throw err;
    }
  }

  /**
   * One level of a folder, derived here from a listing of every key below it: a listing with
   * Delimiter=/ would be cheaper, but servers differ in it (s3rver reports no folder that holds
   * only folders), and a repository's folders hold few keys beside blobs/, which is one level anyway.
   */
  async *list(folder: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    const prefix = folder === '' ? (this.root ? `${this.root}/` : '') : `${this.keyOf(folder)}/`;
    const what = `${this.location}: listing of ${folder || '/'}`;
    const folders = new Set<string>();
    // a server that hands out a page's token again, or says there is more without a token, would
    // list for ever or stop short and call it whole: both are refused as a lying server
    const tokens = new Set<string>();
    let token: string | undefined;
    // what the folder holds is bounded (MAX_FOLDER_ENTRIES); the keys below it, paged through to
    // find them, are bounded far higher (a repository's root lists every object): a server that
    // hands out new tokens for ever ends there
    let entries = 0;
    let keys = 0;
    const tooMany = (n: number, of: string) => new TarportError('INTEGRITY', `${what}: more than ${n} ${of} (a listing without end?)`, { retryable: false });
    do {
      const page = await this.run(
        what,
        (s) => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }), { abortSignal: s }),
        signal,
      );
      keys += page.Contents?.length ?? 0;
      if (keys > MAX_KEYS_BELOW) throw tooMany(MAX_KEYS_BELOW, 'keys below it');
      for (const o of page.Contents ?? []) {
        if (entries > MAX_FOLDER_ENTRIES) throw tooMany(MAX_FOLDER_ENTRIES, 'entries');
        const rest = (o.Key ?? '').slice(prefix.length);
        const slash = rest.indexOf('/');
        if (slash > 0) {
          const name = rest.slice(0, slash);
          if (!folders.has(name)) {
            folders.add(name);
            entries++;
            yield { name, isDir: true, size: 0 };
          }
        } else if (rest !== '' && slash < 0) {
          // '' is a folder marker some tools write
          entries++;
          yield { name: rest, isDir: false, size: o.Size ?? 0, ...(o.LastModified ? { mtime: o.LastModified } : {}) };
        }
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated && !token) throw new TarportError('INTEGRITY', `${what}: the server says the listing goes on but gives no continuation token`, { retryable: false });
      if (token !== undefined && tokens.has(token)) throw new TarportError('INTEGRITY', `${what}: the server gave the continuation token ${JSON.stringify(token)} twice (a listing without end)`, { retryable: false });
      if (token !== undefined) tokens.add(token);
    } while (token);
  }

  /** One download attempt from `offset`: a ranged GET, its body watched for silence. */
  private attempt(key: string): SinkAttempt {
    const what = `${this.location}: ${key}`;
    return async (offset, sink, signal) => {
      try {
        const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(key), ...(offset > 0 ? { Range: `bytes=${offset}-` } : {}) }), {
          // the attempt's signal follows the operation's, which follows the transport's end (scoped)
          abortSignal: signal,
        });
        if (offset > 0 && !String(r.ContentRange ?? '').startsWith(`bytes ${offset}-`)) {
          (r.Body as Readable | undefined)?.destroy();
          throw new TarportError('IO', `${what}: asked for bytes from ${offset}, the server sent ${String(r.ContentRange)}`, { retryable: false });
        }
        await deliverWatched(r.Body as Readable, sink, this.idleMs);
      } catch (e) {
        if (isInvalidRange(e)) throw new TarportError('IO', `${what}: the object holds less than the ${offset} bytes read before: it changed under us`, { cause: e, retryable: false });
        throw this.classify(e, what);
      }
    };
  }

  async read(key: string, opts: ReadOptions = {}): Promise<Readable> {
    // a missing object fails here, not in the middle of a pipeline
    if (!(await this.stat(key, opts.signal))) throw new TarportError('NOT_FOUND', `${this.location}: ${key}: not found`);
    const what = `${this.location}: ${key}`;
    return sinkStream((sink, signal) => this.scoped(signal, (s) => resumableInto(this.attempt(key), sink, this.resumeOptions(opts.offset ?? 0, what, s))), what, opts.signal);
  }

  async readTo(key: string, sink: ByteSink, opts: ReadOptions = {}): Promise<number> {
    const what = `${this.location}: ${key}`;
    return this.scoped(opts.signal, (s) => resumableInto(this.attempt(key), sink, this.resumeOptions(opts.offset ?? 0, what, s)));
  }

  private resumeOptions(offset: number, what: string, signal: AbortSignal) {
    return { offset, retries: this.retries, what, retryable: (e: unknown) => this.classify(e, what).retryable, signal, ...(this.opts.onResume ? { onResume: this.opts.onResume } : {}) };
  }

  /**
   * Reads the source in parts: one that fits in a part is one PutObject; a larger one goes
   * multipart, each part retried on its own, PARTS_IN_FLIGHT in flight. A file's size is known, so
   * its upload starts at once and its parts are read straight into their buffers (no stream).
   */
  async write(key: string, source: Source, opts: WriteOptions = {}): Promise<{ size: number }> {
    const what = `${this.location}: ${key}`;
    return this.scoped(opts.signal, (signal) => this.upload(this.keyOf(key), what, source, signal));
  }

  private async upload(k: string, what: string, source: Source, signal: AbortSignal): Promise<{ size: number }> {
    if (typeof source !== 'function') {
      const fh = await open(source.file, 'r').catch((e: unknown) => {
        throw sourceError(e, what);
      });
      try {
        const size = (await fh.stat()).size;
        if (size > this.partSize) return await this.multipartFile(k, what, fh, size, signal);
        return await this.putOne(k, what, await readPart(fh, 0, size, what), signal);
      } finally {
        await fh.close();
      }
    }
    const parts = partsOf(readableFrom(source, 0, what), this.partSize)[Symbol.asyncIterator]();
    const first = await parts.next();
    const body = first.done ? Buffer.alloc(0) : first.value;
    const second = first.done ? ({ done: true, value: undefined } as const) : await parts.next();
    if (second.done) return this.putOne(k, what, body, signal);
    return this.multipart(k, what, prepended([body, second.value], parts), signal);
  }

  private async putOne(k: string, what: string, body: Buffer, signal: AbortSignal): Promise<{ size: number }> {
    await this.run(what, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: k, Body: body, ContentLength: body.length, ContentMD5: md5(body) }), { abortSignal: signal }), signal);
    return { size: body.length };
  }

  /**
   * A file's multipart upload, resumed from the journal (S3Options.journal) when an earlier run left
   * one of the same size and part size: the parts it confirmed are neither read nor sent again. An
   * upload the server no longer knows (aborted, expired, another server) fails on resume, and the
   * file is then sent afresh, once; a resume that the link fails keeps the upload for the next run.
   */
  private async multipartFile(k: string, what: string, fh: FileHandle, size: number, signal: AbortSignal): Promise<{ size: number }> {
    const partSize = Math.max(this.partSize, Math.ceil(size / MAX_PARTS));
    const journal = this.opts.journal;
    const target = `${this.opts.endpoint ?? 'aws'} ${this.bucket} ${k}`;
    const prior = await journal?.load(target);
    const fresh = (): Resume | undefined => (journal ? { journal, entry: { target, uploadId: '', size, partSize, parts: [] } } : undefined);
    if (journal && prior && prior.size === size && prior.partSize === partSize) {
      try {
        return await this.multipart(k, what, filePartsOf(fh, size, partSize, what, new Set(prior.parts.map((p) => p.n))), signal, { journal, entry: prior });
      } catch (e) {
        const err = e instanceof TarportError ? e : this.classify(e, what);
        // what ends the upload is the server's own word that it is gone or unusable: NoSuchUpload
        // (404), a part refused (400: InvalidPart, EntityTooSmall), or s3rver's 500 to the completion
        // of an upload it does not know. A fault worth trying again (a dropped link, a 503 SlowDown, a
        // credential helper that hangs) says nothing of the upload: multipart kept it for the next
        // run, so no part already sent is thrown away (a refusal, 403, it ended there)
        if (err.code === 'ABORTED' || !uploadGone(err)) throw err;
        // AWS may answer a completion with a passing 500 too: where the server lists the upload's
        // parts, it is asked; only an upload it does not list (or a server that cannot list) is gone
        if (err instanceof CompletionFailed && httpStatusOf(err) === 500 && (await this.uploadListed(k, prior.uploadId, signal))) throw err;
        this.opts.onStaleUpload?.(prior.uploadId, err);
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: k, UploadId: prior.uploadId })).catch(() => undefined);
        await journal.drop(target);
      }
    }
    return this.multipart(k, what, filePartsOf(fh, size, partSize, what, new Set()), signal, fresh());
  }

  /**
   * Whether the upload may still be there: the server lists its parts, or its answer says nothing
   * of the upload (a link that failed, a 5xx, 408, 429). False on any other answer: it does not know
   * the upload (404), cannot list parts (405, 501: s3rver answers 405), or will not let us (403: a
   * policy without s3:ListMultipartUploadParts); the 500 to the completion was then the answer.
   */
  private async uploadListed(k: string, uploadId: string, signal: AbortSignal): Promise<boolean> {
    try {
      await this.client.send(new ListPartsCommand({ Bucket: this.bucket, Key: k, UploadId: uploadId, MaxParts: 1 }), { abortSignal: signal });
      return true;
    } catch (e) {
      const status = httpStatusOf(e);
      return status === undefined || status >= 500 || status === 408 || status === 429;
    }
  }

  private async multipart(k: string, what: string, rest: AsyncIterator<Buffer | number>, signal: AbortSignal, resume?: Resume): Promise<{ size: number }> {
    const uploadId = resume?.entry.uploadId || (await this.create(k, what, signal));
    const entry = resume ? { ...resume.entry, uploadId, parts: [...resume.entry.parts] } : undefined;
    const done: CompletedPart[] = (entry?.parts ?? []).map((p) => ({ ETag: p.etag, PartNumber: p.n }));
    const inflight = new Set<Promise<void>>();
    let saving = entry && !resume?.entry.uploadId ? resume!.journal.save(entry) : Promise.resolve();
    let size = 0;
    let confirmed = 0;
    try {
      const send = (n: number, buf: Buffer) => {
        const p = this.uploadPart(k, uploadId, n, buf, () => confirmed, what, signal).then((etag) => {
          done.push({ ETag: etag, PartNumber: n });
          confirmed += buf.length;
          if (entry) {
            entry.parts.push({ n, etag });
            const snapshot = { ...entry, parts: [...entry.parts] };
            saving = saving.then(() => resume!.journal.save(snapshot));
          }
        });
        inflight.add(p);
        void p.then(() => inflight.delete(p), () => undefined);
      };
      let n = 0;
      for (let next = await rest.next(); !next.done; next = await rest.next()) {
        n++;
        // a number: a part the journal says the server holds already, of that many bytes
        if (typeof next.value === 'number') {
          size += next.value;
          confirmed += next.value;
          continue;
        }
        size += next.value.length;
        send(n, next.value);
        if (inflight.size >= PARTS_IN_FLIGHT) await Promise.race(inflight);
      }
      await Promise.all(inflight);
      await saving;
      done.sort((a, b) => a.PartNumber! - b.PartNumber!);
      await this.run(what, () => this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: k, UploadId: uploadId, MultipartUpload: { Parts: done } }), { abortSignal: signal }), signal).catch((e: unknown) => {
        throw new CompletionFailed(e instanceof TarportError ? e : this.classify(e, what));
      });
      await resume?.journal.drop(resume.entry.target);
      return { size };
    } catch (e) {
      await Promise.allSettled(inflight);
      await saving.catch(() => undefined);
      await rest.return?.();
      const err = e instanceof TarportError ? e : this.classify(e, what);
      // with a journal, an upload cut by the link or the command's end is kept for the next run
      if (resume && (err.code === 'ABORTED' || err.retryable || err.code === 'CONNECTION')) throw err;
      // some servers (s3rver) do not know AbortMultipartUpload: the parts then stay invisible
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: k, UploadId: uploadId })).catch(() => undefined);
      await resume?.journal.drop(resume.entry.target);
      throw err;
    }
  }

  private async create(k: string, what: string, signal: AbortSignal): Promise<string> {
    const created = await this.run(what, () => this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: k }), { abortSignal: signal }), signal);
    if (!created.UploadId) throw new TarportError('IO', `${what}: the server started a multipart upload without an upload id`, { retryable: false });
    return created.UploadId;
  }

  /** One part, sent again on a transient failure; the parts already confirmed stay. */
  private async uploadPart(k: string, uploadId: string, n: number, buf: Buffer, confirmed: () => number, what: string, signal: AbortSignal): Promise<string> {
    let attempt = 0;
    const r = await this.run(
      `${what} (part ${n})`,
      () => {
        if (attempt++ > 0) this.opts.onResume?.(confirmed());
        return this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: k, UploadId: uploadId, PartNumber: n, Body: buf, ContentLength: buf.length, ContentMD5: md5(buf) }), { abortSignal: signal });
      },
      signal,
    );
    if (!r.ETag) throw new TarportError('IO', `${what}: the server confirmed part ${n} without an ETag`, { retryable: false });
    return r.ETag;
  }

  /** CopyObject, then DeleteObject; an object above CopyObject's 5 GiB is streamed through this host. */
  async rename(from: string, to: string, signal?: AbortSignal): Promise<void> {
    const what = `${this.location}: rename ${from} to ${to}`;
    const info = await this.stat(from, signal);
    if (!info) throw new TarportError('NOT_FOUND', `${what}: ${from} not found`);
    if (info.size > MAX_COPY) {
      await this.write(to, () => sinkStream((sink, sig) => this.readTo(from, sink, { signal: sig }), what, signal), signal ? { signal } : {});
    } else {
      const source = `${this.bucket}/${this.keyOf(from).split('/').map(encodeURIComponent).join('/')}`;
      await this.run(what, (s) => this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: this.keyOf(to), CopySource: source }), { abortSignal: s }), signal);
    }
    await this.remove(from, signal);
  }

  async remove(key: string, signal?: AbortSignal): Promise<void> {
    const k = this.keyOf(key);
    const what = `${this.location}: remove ${key}`;
    try {
      await this.run(what, (s) => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: k }), { abortSignal: s }), signal);
    } catch (e) {
      if (this.classify(e, what).code !== 'NOT_FOUND') throw this.classify(e, what);
    }
  }

  /** A request still in flight was given up by its caller: it is aborted (not retried), then the connections go. */
  async close(): Promise<void> {
    this.stop.abort(closedByOwner(this.location));
    this.client.destroy();
  }
}

function makeClient(opts: S3Options, idleMs: number, stop: AbortSignal): S3Client {
  let ca: string[] | undefined;
  if (opts.ca) {
    try {
      ca = [...rootCertificates, readFileSync(opts.ca, 'utf8')];
    } catch (e) {
      throw new TarportError('CONFIG', `--ca ${opts.ca}: ${messageOf(e)}`);
    }
  }
  const agentOpts = { keepAlive: true, maxSockets: 8 };
  const client = new S3Client({
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    credentials: boundedCredentials(defaultProvider(), opts.credentialsLimitMs ?? CREDENTIALS_LIMIT_IDLE_TIMEOUTS * idleMs, stop),
    // the SDK's own chain (AWS_REGION, shared config) first; a server that ignores regions gets one
    region: opts.region ?? (async () => (await regionFromChain()) ?? 'us-east-1'),
    forcePathStyle: opts.pathStyle ?? false,
    // known lengths, no aws-chunked framing (see the class comment)
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // retries are ours (withRetries, resumableInto), classified like every other transport's
    maxAttempts: 1,
    // socketTimeout is the idle timeout (no byte either way for this long); requestTimeout would
    // bound a whole request, which a large part or a slow link may rightly exceed
    requestHandler: {
      connectionTimeout: idleMs,
      socketTimeout: idleMs,
      httpAgent: new HttpAgent(agentOpts),
      httpsAgent: new HttpsAgent({ ...agentOpts, ...(ca ? { ca } : {}) }),
    },
  });
  client.middlewareStack.add(
    (next) => async (args) => {
      const req = args.request as { method?: string; headers?: Record<string, string> };
      if (req.method === 'PUT' && req.headers) req.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      return next(args);
    },
    { step: 'build', name: 'tarportUnsignedPayload' },
  );
  return client;
}

/** The region the SDK would find on its own (AWS_REGION, ~/.aws/config), if any. */
async function regionFromChain(): Promise<string | undefined> {
  try {
    const probe = new S3Client({});
    const region = await probe.config.region();
    probe.destroy();
    return region;
  } catch {
    return undefined;
  }
}

type CredentialChain = ReturnType<typeof defaultProvider>;

/**
 * The credential chain, bounded: a chain that has not answered within `ms` fails the request
 * (CONNECTION, as a server that does not answer, exit 1; not retried within the command: each try
 * would wait the bound again). A lookup still under way is shared by
 * the next request rather than started again, so a hung helper is not spawned once per request or
 * poll round; the SDK keeps what it got until it expires.
 */
function boundedCredentials(chain: CredentialChain, ms: number, stop: AbortSignal): CredentialChain {
  let pending: Promise<Awaited<ReturnType<CredentialChain>>> | undefined;
  return async (props) => {
    const lookup = (pending ??= chain(props).finally(() => (pending = undefined)));
    let timer: NodeJS.Timeout | undefined;
    let onStop: (() => void) | undefined;
    // the SDK hands the request's abort signal to its HTTP handler only, after signing: a SIGTERM
    // during the lookup is heard here, from the transport's own end, or the command would wait it out
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TarportError('CONNECTION', `S3 credentials: the AWS credential chain (environment, shared config and its credential_process, SSO, instance metadata) gave none within ${Math.round(ms / 1000)} s`, { retryable: false })), ms);
      timer.unref();
      onStop = () => reject(new TarportError('ABORTED', 'S3 credentials: the lookup was given up: the command is stopping', { cause: stop.reason, retryable: false }));
      if (stop.aborted) onStop();
      else stop.addEventListener('abort', onStop, { once: true });
    });
    try {
      return await Promise.race([lookup, late]);
    } finally {
      clearTimeout(timer);
      if (onStop) stop.removeEventListener('abort', onStop);
    }
  };
}

/**
 * What the SDK's "TimeoutError" was: its HTTP handler gives that name to a connection the peer reset
 * or closed (ECONNRESET, EPIPE) as well as to a silent one, and an operator needs to know which.
 */
function timeoutCause(code: string | undefined, idleMs: number): string {
  if (code === 'ECONNRESET' || code === 'EPIPE') return `the connection was closed by the server or on the way (${code})`;
  return `the server sent nothing for ${idleMs / 1000} s (idle timeout)`;
}

/** The server's word that a resumed multipart upload is gone or unusable (see multipartFile). */
function uploadGone(err: TarportError): boolean {
  const status = httpStatusOf(err);
  return status === 404 || status === 400 || (err instanceof CompletionFailed && status === 500);
}

/** CompleteMultipartUpload failed (after its retries): the error as classified, marked by where it came from. */
class CompletionFailed extends TarportError {
  constructor(e: TarportError) {
    super(e.code, e.message, { cause: e, retryable: e.retryable });
    this.name = 'CompletionFailed';
  }
}

/** The HTTP status the server answered with, along an error's cause chain; undefined when none came. */
function httpStatusOf(e: unknown): number | undefined {
  for (let cur = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const status = (cur as SdkError).$metadata?.httpStatusCode;
    if (status !== undefined) return status;
  }
  return undefined;
}

function isInvalidRange(e: unknown): boolean {
  const err = e as SdkError | undefined;
  return err?.name === 'InvalidRange' || err?.$metadata?.httpStatusCode === 416;
}

/** The first `code` along an error's cause chain. */
function errorCode(e: unknown): string | undefined {
  for (let cur = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * Hands a response body to the sink chunk by chunk; a body that sends nothing for `idleMs` while
 * the sink is not busy is destroyed as a timeout, so the download resumes on a new connection.
 */
async function deliverWatched(body: Readable, sink: ByteSink, idleMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => body.destroy(Object.assign(new Error(`no data for ${idleMs} ms`), { name: 'TimeoutError' })), idleMs);
  };
  try {
    arm();
    for await (const c of body) {
      clearTimeout(timer);
      const r = sink(c as Buffer);
      if (r) await r;
      arm();
    }
  } finally {
    clearTimeout(timer);
  }
}

/** The stream cut into parts of `size` bytes (the last one shorter), growing every PARTS_PER_STEP parts. */
async function* partsOf(src: Readable, size: number): AsyncGenerator<Buffer> {
  let n = 0;
  let cur = Buffer.allocUnsafe(size);
  let at = 0;
  try {
    for await (const c of src) {
      let chunk = c as Buffer;
      while (chunk.length > 0) {
        const take = Math.min(chunk.length, cur.length - at);
        chunk.copy(cur, at, 0, take);
        at += take;
        chunk = chunk.subarray(take);
        if (at === cur.length) {
          yield cur;
          n++;
          cur = Buffer.allocUnsafe(size * (1 + Math.floor(n / PARTS_PER_STEP)));
          at = 0;
        }
      }
    }
    if (at > 0 || n === 0) yield cur.subarray(0, at);
  } finally {
    src.destroy();
  }
}

/** The iterator's first values given again, then the rest of it. */
async function* prepended(first: Buffer[], rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  try {
    yield* first;
    for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
  } finally {
    await rest.return?.();
  }
}

/** `length` bytes of an open file from `at`, read into a buffer of their own. */
async function readPart(fh: FileHandle, at: number, length: number, what: string): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  for (let got = 0; got < length; ) {
    const { bytesRead } = await fh.read(buf, got, length - got, at + got).catch((e: unknown) => {
      throw sourceError(e, what);
    });
    if (bytesRead === 0) throw sourceError(new Error(`the file ended after ${at + got} of the ${at + length} bytes it had when the upload began`), what);
    got += bytesRead;
  }
  return buf;
}

/** A file in parts of `part` bytes; a part in `skip` (numbered from 1) is not read: its length stands for it. */
async function* filePartsOf(fh: FileHandle, total: number, part: number, what: string, skip: ReadonlySet<number>): AsyncGenerator<Buffer | number> {
  for (let at = 0, n = 1; at < total; at += part, n++) {
    const len = Math.min(part, total - at);
    yield skip.has(n) ? len : await readPart(fh, at, len, what);
  }
}

/** A body's Content-MD5 header: the server refuses a body that does not match (BadDigest). */
function md5(body: Buffer): string {
  return createHash('md5').update(body).digest('base64');
}
