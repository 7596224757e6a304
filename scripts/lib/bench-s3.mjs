#!/usr/bin/env node
// S3 transfers: tarport's S3 transport against curl (--aws-sigv4), the SDK's own single-request
// PutObject/GetObject and the SDK's own multipart Upload (@aws-sdk/lib-storage, 16 MiB parts, 4 in
// flight: the multipart baseline, since a server may spend on joining parts what a single PUT does
// not cost it), the same file to and from the same server. For scripts/bench, and on its own:
//   node scripts/lib/bench-s3.mjs [MiB] [rounds]
// Server: TP_S3_ENDPOINT, TP_S3_BUCKET, TP_S3_ACCESS_KEY, TP_S3_SECRET_KEY (scripts/lib/common.sh
// tp_start_s3); when unset, an s3rver of its own on a loopback port, stopped by pid at the end.
// The calls are those push and pull make: write from the spooled file, readTo into a sink (which
// drops the bytes, as the baselines write to /dev/null). Who goes first alternates per round.
// Prints one JSON object: medians in seconds and MB/s, and tarport's ratio to each baseline.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { S3Transport } from '../../dist/transport/s3.js';

const run = promisify(execFile);
const mib = Number(process.argv[2] ?? 256);
const rounds = Number(process.argv[3] ?? 3);
const work = await mkdtemp(join(tmpdir(), 'tarport-bench-s3-'));
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

/** An s3rver of our own when no server was given. */
async function server() {
  if (process.env.TP_S3_ENDPOINT) {
    return { endpoint: process.env.TP_S3_ENDPOINT, bucket: process.env.TP_S3_BUCKET ?? 'tarport', key: process.env.TP_S3_ACCESS_KEY ?? 'S3RVER', secret: process.env.TP_S3_SECRET_KEY ?? 'S3RVER', stop: () => undefined };
  }
  const port = 20000 + Math.floor(Math.random() * 10000);
  const bin = new URL('../../node_modules/s3rver/bin/s3rver.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [bin, '-d', join(work, 'data'), '-a', '127.0.0.1', '-p', String(port), '--silent', '--configure-bucket', 'tarport'], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    const up = await new Promise((r) => createConnection(port, '127.0.0.1').on('connect', function () { this.destroy(); r(true); }).on('error', () => r(false)));
    if (up) break;
    if (i === 49) throw new Error(`s3rver did not start on port ${port}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { endpoint: `http://127.0.0.1:${port}`, bucket: 'tarport', key: 'S3RVER', secret: 'S3RVER', stop: () => child.kill() };
}

const S = await server();
process.env.AWS_ACCESS_KEY_ID = S.key;
process.env.AWS_SECRET_ACCESS_KEY = S.secret;
const file = join(work, 'transfer.bin');
await writeFile(file, randomBytes(mib << 20));
const size = (await stat(file)).size;
const ours = new S3Transport({ kind: 's3', bucket: S.bucket, prefix: 'bench' }, { endpoint: S.endpoint, pathStyle: true });
const sdk = new S3Client({ endpoint: S.endpoint, region: 'us-east-1', forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
// curl 7.88 signs with SigV4 but sends no payload hash, which S3 requires: unsigned, as the SDK's streams
const curlBase = ['-sS', '-f', '--aws-sigv4', 'aws:amz:us-east-1:s3', '--user', `${S.key}:${S.secret}`, '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD'];
const url = (k) => `${S.endpoint}/${S.bucket}/bench/${k}`;

async function time(fn) {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

const sides = {
  tarport: {
    up: () => ours.write('t.bin', { file }),
    down: async () => {
      let n = 0;
      await ours.readTo('t.bin', (c) => void (n += c.length));
      if (n !== size) throw new Error(`tarport downloaded ${n} of ${size} bytes`);
    },
    clean: () => ours.remove('t.bin'),
  },
  curl: {
    up: () => run('curl', [...curlBase, '-T', file, url('c.bin')]),
    down: () => run('curl', [...curlBase, '-o', '/dev/null', url('c.bin')]),
    clean: () => run('curl', [...curlBase, '-X', 'DELETE', url('c.bin')]),
  },
  sdk: {
    up: () => sdk.send(new PutObjectCommand({ Bucket: S.bucket, Key: 'bench/s.bin', Body: createReadStream(file, { highWaterMark: 1 << 20 }), ContentLength: size })),
    down: async () => {
      const r = await sdk.send(new GetObjectCommand({ Bucket: S.bucket, Key: 'bench/s.bin' }));
      for await (const _ of r.Body) void _;
    },
    clean: () => sdk.send(new DeleteObjectCommand({ Bucket: S.bucket, Key: 'bench/s.bin' })),
  },
  sdkUpload: {
    up: () => new Upload({ client: sdk, partSize: 16 << 20, queueSize: 4, params: { Bucket: S.bucket, Key: 'bench/u.bin', Body: createReadStream(file, { highWaterMark: 1 << 20 }) } }).done(),
    down: async () => {
      const r = await sdk.send(new GetObjectCommand({ Bucket: S.bucket, Key: 'bench/u.bin' }));
      for await (const _ of r.Body) void _;
    },
    clean: () => sdk.send(new DeleteObjectCommand({ Bucket: S.bucket, Key: 'bench/u.bin' })),
  },
};

const times = Object.fromEntries(Object.keys(sides).map((k) => [k, { up: [], down: [] }]));
try {
  await ours.stat('warm-up'); // connect outside the timing
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? Object.keys(sides).reverse() : Object.keys(sides);
    for (const k of order) {
      times[k].up.push(await time(sides[k].up));
      times[k].down.push(await time(sides[k].down));
      await sides[k].clean();
    }
  }
} finally {
  await ours.close();
  sdk.destroy();
  S.stop();
  await rm(work, { recursive: true, force: true });
}

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const out = { mib, rounds, endpoint: S.endpoint };
for (const [k, t] of Object.entries(times)) {
  out[k] = { upload_s: median(t.up), download_s: median(t.down), upload_mbs: size / 1e6 / median(t.up), download_mbs: size / 1e6 / median(t.down) };
}
out.ratio = {
  upload_vs_curl: out.curl.upload_s / out.tarport.upload_s,
  download_vs_curl: out.curl.download_s / out.tarport.download_s,
  upload_vs_sdk: out.sdk.upload_s / out.tarport.upload_s,
  download_vs_sdk: out.sdk.download_s / out.tarport.download_s,
  upload_vs_sdk_upload: out.sdkUpload.upload_s / out.tarport.upload_s,
};
out.loadavg = (await import('node:os')).loadavg().map((l) => Number(l.toFixed(2)));
console.log(JSON.stringify(out, (_k, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(3)) : v)));
