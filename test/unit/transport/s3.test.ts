import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { S3Transport } from '../../../src/transport/s3.js';
import { startTrickle, type Trickle } from '../../trickle.js';

// How SDK and socket errors become typed ones: from names, codes and HTTP statuses only (the
// transport against a real server: test/integration/s3.test.ts).

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'; // as the CLI does (src/cli/context.ts)
const t = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint: 'http://127.0.0.1:1', pathStyle: true, idleTimeoutMs: 5000 });

/** An error shaped as the SDK throws them (a ServiceException with name and metadata). */
function sdkError(name: string, status?: number, message = 'some words'): Error {
  return Object.assign(new Error(message), { name, ...(status !== undefined ? { $metadata: { httpStatusCode: status } } : {}) });
}

describe('S3Transport.classify', () => {
  const rows: [string, Error, string, boolean, RegExp][] = [
    ['NoSuchKey', sdkError('NoSuchKey', 404), 'NOT_FOUND', false, /not found/],
    ['HEAD 404 (no body, so no error name of S3s own)', sdkError('NotFound', 404), 'NOT_FOUND', false, /not found/],
    ['NoSuchBucket', sdkError('NoSuchBucket', 404), 'IO', false, /the bucket releases does not exist/],
    ['bad secret', sdkError('SignatureDoesNotMatch', 403), 'IO', false, /access refused \(SignatureDoesNotMatch\)/],
    ['unknown key id', sdkError('InvalidAccessKeyId', 403), 'IO', false, /access refused \(InvalidAccessKeyId\)/],
    ['a 403 with a name we do not know', sdkError('Forbidden', 403), 'IO', false, /access refused \(Forbidden\)/],
    ['no credentials at all', sdkError('CredentialsProviderError'), 'CONFIG', false, /no S3 credentials found/],
    ['SlowDown', sdkError('SlowDown', 503), 'CONNECTION', true, /SlowDown/],
    ['a 500 with any name', sdkError('Whatever', 500), 'CONNECTION', true, /Whatever|some words/],
    ['429', sdkError('TooManyRequests', 429), 'CONNECTION', true, /some words/],
    ['socket timeout of the SDK', sdkError('TimeoutError'), 'CONNECTION', true, /sent nothing for 5 s \(idle timeout\)/],
    ['connection reset', Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), 'CONNECTION', true, /ECONNRESET/],
    // the SDK's HTTP handler names a reset or closed connection TimeoutError too: it is said as what it was
    ['connection reset, as the SDK names it', Object.assign(new Error('socket hang up'), { name: 'TimeoutError', code: 'ECONNRESET' }), 'CONNECTION', true, /: the connection was closed by the server or on the way \(ECONNRESET\)$/],
    ['a write into a closed connection, as the SDK names it', Object.assign(new Error('write EPIPE'), { name: 'TimeoutError', code: 'EPIPE' }), 'CONNECTION', true, /: the connection was closed by the server or on the way \(EPIPE\)$/],
    ['refused', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'CONNECTION', true, /ECONNREFUSED/],
    ['host not found', Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' }), 'CONNECTION', false, /host not found/],
    ['untrusted certificate', Object.assign(new Error('self-signed'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }), 'UNTRUSTED', false, /--ca FILE/],
    ['a body damaged on the way (its Content-MD5 does not match)', sdkError('BadDigest', 400), 'CONNECTION', true, /received the body damaged \(BadDigest\)/],
    ['a 400 we do not know', sdkError('InvalidArgument', 400), 'IO', false, /HTTP 400/],
    ['aborted', sdkError('AbortError'), 'ABORTED', false, /aborted/],
  ];
  it.each(rows)('%s', (_why, err, code, retryable, message) => {
    const got = t.classify(err, 's3://releases/site: x');
    expect(got.code).toBe(code);
    expect(got.retryable).toBe(retryable);
    expect(got.message).toMatch(message);
    expect(got.cause).toBe(err);
  });

  it('decides by name and status, not by message text', () => {
    // a message that reads like a transient failure does not make a permission error retryable
    expect(t.classify(sdkError('AccessDenied', 403, 'please retry: connection reset'), 'x').retryable).toBe(false);
    // and a message that reads like a refusal does not make a 503 final
    expect(t.classify(sdkError('ServiceUnavailable', 503, 'Access Denied'), 'x').retryable).toBe(true);
  });

  it('names the location with the endpoint', () => {
    expect(t.location).toBe('s3://releases/site (http://127.0.0.1:1)');
    expect(t.capabilities).toMatchObject({ atomicRename: true, atomicWrite: true, local: false });
  });
});

describe('S3Transport.close()', () => {
  let server: Trickle | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('cuts a read still in flight at once, even one that never goes idle, and does not retry it', async () => {
    const s = (server = await startTrickle());
    // credentials as the SDK reads them, put back afterwards (the unit files share one process)
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = 'test-key';
    process.env.AWS_SECRET_ACCESS_KEY = 'test-secret';
    onTestFinished(() => {
      for (const [k, v] of [['AWS_ACCESS_KEY_ID', saved.id], ['AWS_SECRET_ACCESS_KEY', saved.secret]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    });
    // an idle timeout the trickle never reaches, and retries: only close() can end the read in time
    const c = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint: `http://127.0.0.1:${s.port}`, region: 'us-east-1', pathStyle: true, idleTimeoutMs: 5000, retries: 5 });
    const reading = c.readTo('blob', () => undefined).then(
      () => 'read to the end',
      (e: unknown) => e,
    );
    await vi.waitFor(() => expect(s.sent()).toBeGreaterThan(2), { timeout: 10_000 }); // the body flows (a byte per 100 ms; slower on a loaded machine)
    await c.close();
    const outcome = await Promise.race([reading, new Promise((r) => setTimeout(() => r('the read still running 3 s after close()'), 3000))]);
    expect(outcome).toBeInstanceOf(TarportError);
    expect((outcome as TarportError).code).toBe('ABORTED');
    expect((outcome as TarportError).retryable).toBe(false);
    expect(s.requests()).toBe(1);
  });
});

describe('S3Transport.list against a lying server', () => {
  /** A server that answers every listing with one key and `more` (a page's token, or none). */
  async function lister(more: { truncated: boolean; token?: string }) {
    const { createServer } = await import('node:http');
    let pages = 0;
    const server = createServer((_req, res) => {
      pages++;
      res.writeHead(200, { 'Content-Type': 'application/xml' });
      const keys = '<Contents><Key>site/catalog.json</Key><Size>2</Size></Contents>';
      const token = more.token;
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>releases</Name><Prefix>site/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>${more.truncated}</IsTruncated>` +
          `${token ? `<NextContinuationToken>${token}</NextContinuationToken>` : ''}${keys}</ListBucketResult>`,
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    onTestFinished(() => void server.close());
    const port = (server.address() as import('node:net').AddressInfo).port;
    // the SDK's own credential chain reads these
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'test');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test');
    onTestFinished(() => void vi.unstubAllEnvs());
    const s3 = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint: `http://127.0.0.1:${port}`, pathStyle: true, idleTimeoutMs: 5000 });
    const listing = (async () => {
      const got: string[] = [];
      for await (const e of s3.list('')) got.push(e.name);
      return got;
    })();
    return { listing, pages: () => pages };
  }

  it('a continuation token handed out twice is refused (INTEGRITY), not listed for ever', async () => {
    const { listing, pages } = await lister({ truncated: true, token: 'again' });
    const err = await Promise.race([listing.catch((e: unknown) => e), new Promise((r) => setTimeout(() => r('still listing after 5 s'), 5_000))]);
    expect(err).toMatchObject({ code: 'INTEGRITY', retryable: false, message: expect.stringMatching(/^s3:\/\/releases\/site \(http:\/\/127\.0\.0\.1:\d+\): listing of \/: the server gave the continuation token "again" twice \(a listing without end\)$/) });
    expect(pages()).toBe(2);
  });

  it('a listing that hands out new tokens without end is refused (INTEGRITY) after a million entries', async () => {
    const s3 = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint: 'http://127.0.0.1:9', pathStyle: true, idleTimeoutMs: 5000 });
    // the server's answers as the SDK hands them over (its XML parsing of a million keys would
    // take this test ten seconds): a thousand new names and a new token on every page
    let pages = 0;
    Object.assign((s3 as unknown as { client: object }).client, {
      send: async () => {
        const p = ++pages;
        return { Contents: Array.from({ length: 1000 }, (_, i) => ({ Key: `site/blobs/sha256/k${p}-${i}`, Size: 2 })), IsTruncated: true, NextContinuationToken: `page-${p}` };
      },
    });
    let listed = 0;
    const listing = (async () => {
      for await (const _ of s3.list('blobs/sha256')) listed++;
    })();
    await expect(listing).rejects.toMatchObject({ code: 'INTEGRITY', retryable: false, message: `${s3.location}: listing of blobs/sha256: more than 1000000 entries (a listing without end?)` });
    expect(listed).toBe(1_000_001);
  });

  it("a folder's one subfolder holding many keys is listed whole: the bound is on entries, not on the keys below", async () => {
    const s3 = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint: 'http://127.0.0.1:9', pathStyle: true, idleTimeoutMs: 5000 });
    let pages = 0;
    const page = Array.from({ length: 1000 }, () => ({ Key: 'site/blobs/sha256/x', Size: 2 }));
    // 1,500 pages (1.5 million keys below blobs/), then the end: the root lists one folder
    Object.assign((s3 as unknown as { client: object }).client, { send: async () => (++pages < 1500 ? { Contents: page, IsTruncated: true, NextContinuationToken: `page-${pages}` } : { Contents: page, IsTruncated: false }) });
    const names: string[] = [];
    for await (const e of s3.list('')) names.push(e.name);
    expect(names).toEqual(['blobs']);
  });

  it('a listing said to go on without a continuation token is refused, not taken as whole', async () => {
    const { listing } = await lister({ truncated: true });
    await expect(listing).rejects.toMatchObject({ code: 'INTEGRITY', message: expect.stringContaining('listing of /: the server says the listing goes on but gives no continuation token') });
  });
});

describe('the AWS credential chain', () => {
  it('a credential_process that hangs fails the request (CONNECTION, not retried) within the bound, and is started once for requests that come meanwhile', async () => {
    const { mkdtemp, readFile, writeFile } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'tp-s3-creds-'));
    const started = join(dir, 'started');
    await writeFile(join(dir, 'config'), `[default]\ncredential_process = sh -c 'echo run >> ${started}; sleep 4'\n`);
    await writeFile(join(dir, 'credentials'), '');
    vi.stubEnv('AWS_ACCESS_KEY_ID', undefined);
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', undefined);
    vi.stubEnv('AWS_PROFILE', undefined);
    vi.stubEnv('AWS_CONFIG_FILE', join(dir, 'config'));
    vi.stubEnv('AWS_SHARED_CREDENTIALS_FILE', join(dir, 'credentials'));
    vi.stubEnv('AWS_EC2_METADATA_DISABLED', 'true');
    onTestFinished(() => void vi.unstubAllEnvs());
    const s3 = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint: 'http://127.0.0.1:9', region: 'us-east-1', pathStyle: true, idleTimeoutMs: 5000, credentialsLimitMs: 1_000 });
    const t0 = Date.now();
    const outcomes = await Promise.all([s3.stat('a'), s3.stat('b')].map((p) => Promise.race([p.then(() => 'answered', (e: unknown) => e), new Promise((r) => setTimeout(() => r('still waiting after 3 s'), 3_000))])));
    for (const e of outcomes) expect(e).toMatchObject({ code: 'CONNECTION', retryable: false, message: expect.stringContaining('the AWS credential chain (environment, shared config and its credential_process, SSO, instance metadata) gave none within 1 s') });
    expect(Date.now() - t0).toBeLessThan(2_500);
    expect((await readFile(started, 'utf8')).split('\n').filter(Boolean)).toEqual(['run']);
    await s3.close();
  }, 15_000);
});

describe('the AWS credential chain and the command\'s end', () => {
  it('a SIGTERM while a credential_process hangs ends the request at once (ABORTED), not after the bound', async () => {
    const { mkdtemp, writeFile } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'tp-s3-creds-'));
    await writeFile(join(dir, 'config'), `[default]\ncredential_process = sh -c 'sleep 4'\n`);
    await writeFile(join(dir, 'credentials'), '');
    vi.stubEnv('AWS_ACCESS_KEY_ID', undefined);
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', undefined);
    vi.stubEnv('AWS_PROFILE', undefined);
    vi.stubEnv('AWS_CONFIG_FILE', join(dir, 'config'));
    vi.stubEnv('AWS_SHARED_CREDENTIALS_FILE', join(dir, 'credentials'));
    vi.stubEnv('AWS_EC2_METADATA_DISABLED', 'true');
    onTestFinished(() => void vi.unstubAllEnvs());
    const command = new AbortController();
    const s3 = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint: 'http://127.0.0.1:9', region: 'us-east-1', pathStyle: true, idleTimeoutMs: 5000, credentialsLimitMs: 10_000, signal: command.signal });
    const t0 = Date.now();
    const outcome = s3.stat('a').then(() => 'answered', (e: unknown) => e);
    setTimeout(() => command.abort(new Error('SIGTERM')), 300);
    const e = await Promise.race([outcome, new Promise((r) => setTimeout(() => r('still waiting after 2 s'), 2_000))]);
    expect(e).toMatchObject({ code: 'ABORTED', retryable: false });
    expect(Date.now() - t0).toBeLessThan(1_500);
    await s3.close();
  }, 15_000);
});

/**
 * A 12 MiB file whose multipart upload (5 MiB parts) an earlier run left as `u-1`, its first part
 * confirmed in the journal, and a transport (no retries) to resume it against `server` (listening).
 */
async function resumedUpload(server: import('node:http').Server) {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { folderJournal } = await import('../../../src/transport/journal.js');
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onTestFinished(() => void server.close());
  vi.stubEnv('AWS_ACCESS_KEY_ID', 'test');
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test');
  onTestFinished(() => void vi.unstubAllEnvs());
  const dir = await mkdtemp(join(tmpdir(), 'tp-s3-resume-'));
  const file = join(dir, 'blob');
  await writeFile(file, Buffer.alloc(12 << 20, 7));
  const endpoint = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`;
  const journal = folderJournal(join(dir, 'journal'), (m) => expect.fail(m));
  const target = `${endpoint} releases site/blob`;
  await journal.save({ target, uploadId: 'u-1', size: 12 << 20, partSize: 5 << 20, parts: [{ n: 1, etag: '"0123456789abcdef0123456789abcdef"' }] });
  const stale: string[] = [];
  const s3 = new S3Transport({ kind: 's3', bucket: 'releases', prefix: 'site' }, { endpoint, region: 'us-east-1', pathStyle: true, idleTimeoutMs: 5000, retries: 0, partSize: 5 << 20, journal, onStaleUpload: (id) => stale.push(id) });
  return { s3, file, journal, target, stale };
}

describe('a resumed multipart upload', () => {
  it.each([
    ['to take a part', 'PUT'],
    ['to complete the upload', 'POST'],
  ])('a server too busy (503 SlowDown) %s keeps the upload and its record for the next run: nothing aborted, nothing sent afresh', async (_what, busy) => {
    const { createServer } = await import('node:http');
    const seen: string[] = [];
    const server = createServer((req, res) => {
      req.resume();
      seen.push(`${req.method} ${new URL(req.url!, 'http://x').search.includes('uploadId') ? 'part or upload' : 'object'}`);
      if (req.method === busy) return res.writeHead(503, { 'content-type': 'application/xml' }).end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
      if (req.method === 'PUT') return res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"' }).end();
      res.writeHead(204).end();
    });
    const { s3, file, journal, target, stale } = await resumedUpload(server);
    await expect(s3.write('blob', { file })).rejects.toMatchObject({ code: 'CONNECTION', retryable: true });
    expect(stale).toEqual([]);
    expect(seen.filter((r) => r.startsWith('DELETE'))).toEqual([]);
    expect((await journal.load(target))?.uploadId).toBe('u-1');
    await s3.close();
  }, 20_000);

  it.each([
    ['a 500 to the completion, and the server lists the upload\'s parts (200): kept for the next run', 500, 200, false],
    ['a 500 to the completion, and the server does not know the upload (404 NoSuchUpload): ended, and the file sent afresh', 500, 404, true],
    ['a 500 to the completion, and the server cannot list parts (405, as s3rver): ended, and the file sent afresh', 500, 405, true],
    ['a 500 to the completion, and a policy without s3:ListMultipartUploadParts (403): ended, and the file sent afresh', 500, 403, true],
    ['a part refused at the completion (400 InvalidPart): ended at once, nothing asked, and the file sent afresh', 400, 200, true],
  ])('%s', async (_what, completion, listing, gone) => {
    const { createServer } = await import('node:http');
    const seen: string[] = [];
    const xmlError = (code: string) => `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`;
    const server = createServer((req, res) => {
      req.resume();
      const q = new URL(req.url!, 'http://x').searchParams;
      seen.push(`${req.method} ${q.has('uploadId') ? `upload ${q.get('uploadId')}` : q.has('uploads') ? 'create' : 'object'}`);
      if (req.method === 'GET' && q.has('uploadId')) {
        if (listing !== 200) return res.writeHead(listing, { 'content-type': 'application/xml' }).end(xmlError(listing === 404 ? 'NoSuchUpload' : listing === 403 ? 'AccessDenied' : 'MethodNotAllowed'));
        return res.writeHead(200, { 'content-type': 'application/xml' }).end('<?xml version="1.0" encoding="UTF-8"?><ListPartsResult><Bucket>releases</Bucket><Key>site/blob</Key><UploadId>u-1</UploadId><IsTruncated>false</IsTruncated></ListPartsResult>');
      }
      // the completion, and a fresh upload's creation: refused each
      if (req.method === 'POST') return res.writeHead(completion, { 'content-type': 'application/xml' }).end(xmlError(completion === 400 ? 'InvalidPart' : 'InternalError'));
      if (req.method === 'PUT') return res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"' }).end();
      res.writeHead(204).end();
    });
    const { s3, file, journal, target, stale } = await resumedUpload(server);
    await expect(s3.write('blob', { file })).rejects.toMatchObject({ code: completion === 400 ? 'IO' : 'CONNECTION' });
    expect(seen.includes('GET upload u-1')).toBe(completion === 500);
    expect(stale).toEqual(gone ? ['u-1'] : []);
    expect(seen.includes('DELETE upload u-1')).toBe(gone);
    expect(seen.includes('POST create')).toBe(gone);
    expect((await journal.load(target))?.uploadId).toBe(gone ? undefined : 'u-1');
    await s3.close();
  }, 20_000);
});
