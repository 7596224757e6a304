import { execFile } from 'node:child_process';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from '../../src/crypto/index.js';
import { docker, emptyDaemon, fixture, tarport, tempDir } from '../helpers.js';

// The mirror as a registry (docs/mirror.md): nginx with contrib/nginx/registry.conf, as scripts/test
// starts it, serves the repository TP_REGISTRY_REPO at /v2/ of the origin (plain HTTP on loopback,
// which docker and containerd accept without configuration) and through the caching tier. Real
// clients pull: the consumer dockerd, and containerd through ctr.

const run = promisify(execFile);

function env() {
  const need = ['TP_REGISTRY_REPO', 'TP_REGISTRY_ORIGIN', 'TP_REGISTRY_CACHE', 'TP_NGINX_ORIGIN_LOG', 'TP_NGINX_CACHE_LOG', 'TP_CONTAINERD_SOCK'] as const;
  const missing = need.filter((k) => !process.env[k]);
  if (missing.length > 0) throw new Error(`run the suite through scripts/test: it starts nginx and containerd (${missing.join(', ')} not set)`);
  return Object.fromEntries(need.map((k) => [k, process.env[k]!])) as Record<(typeof need)[number], string>;
}

const E = env();
const REPO = E.TP_REGISTRY_REPO;
const NS = `tarport-registry-${process.pid}`;

async function ctr(...args: string[]): Promise<string> {
  return (await run('ctr', ['-a', E.TP_CONTAINERD_SOCK, '-n', NS, ...args], { maxBuffer: 16 << 20, timeout: 120_000 })).stdout;
}

/** The requests an access log gains while `action` runs. */
async function requestsDuring(log: string, action: () => Promise<unknown>): Promise<string[]> {
  const from = (await stat(log)).size;
  await action();
  await new Promise((r) => setTimeout(r, 200)); // nginx writes its log line after the response
  return (await readFile(log)).subarray(from).toString().split('\n').filter(Boolean).map((l) => /"([A-Z]+ \S+) HTTP/.exec(l)?.[1] ?? l);
}

/** The blob digests a list of requests asked for (GET), sorted. */
const blobsIn = (requests: string[]) => requests.map((r) => /^GET \/v2\/\S+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(r)?.[1]).filter((d): d is string => d !== undefined).sort();

async function push(archive: string, name: string, ...more: string[]): Promise<void> {
  const r = await tarport(['push', '--init', fixture(archive), '--to', REPO, '--name', name, ...more]);
  expect(r.stderr).toContain(`published ${name}`);
  expect(r.code).toBe(0);
}

interface Manifest {
  config: { digest: string };
  layers: { digest: string }[];
}

/** What the registry view serves for a tag: the manifest's bytes, parsed, and its digest. */
async function served(path: string, tag: string): Promise<{ digest: string; manifest: Manifest }> {
  const bytes = await readFile(join(REPO, 'tarport/registry', path, '_manifests', `${tag}.oci-manifest`));
  return { digest: sha256(bytes), manifest: JSON.parse(bytes.toString()) as Manifest };
}

async function wipeRepo(): Promise<void> {
  for (const f of await readdir(REPO)) await rm(join(REPO, f), { recursive: true, force: true });
}

beforeAll(async () => {
  await wipeRepo();
  await emptyDaemon('consumer');
});

afterAll(async () => {
  await emptyDaemon('consumer').catch(() => undefined);
  for (const ref of (await ctr('images', 'ls', '-q').catch(() => '')).split('\n').filter(Boolean)) await ctr('images', 'rm', ref).catch(() => undefined);
  await run('ctr', ['-a', E.TP_CONTAINERD_SOCK, 'namespaces', 'rm', NS]).catch(() => undefined);
});

describe('the mirror as a read-only registry (nginx, contrib/nginx/registry.conf)', () => {
  // Docker Engine 20.10 (Debian 12) cannot unpack zstd layers: docker's releases are gzip
  it('answers /v2/, manifests by tag and by digest and blobs with the types and headers the API requires', async () => {
    await push('app-v1.tar', 'team/app:1', '--compress', 'gzip');
    await push('app-v1.tar', 'solo:1', '--compress', 'gzip');
    const base = `http://${E.TP_REGISTRY_ORIGIN}/v2`;
    const root = await fetch(`${base}/`);
    expect(root.status).toBe(200);
    expect(root.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
    expect(await root.json()).toEqual({});

    const { digest, manifest } = await served('team/app', '1');
    const byTag = await fetch(`${base}/team/app/manifests/1`, { method: 'HEAD' });
    expect(byTag.status).toBe(200);
    expect(byTag.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(byTag.headers.get('cache-control')).toBe('no-cache');
    // the API requires the digest by tag too (containerd's resolver reads it from this HEAD): registry.js
    expect(byTag.headers.get('docker-content-digest')).toBe(digest);
    expect(byTag.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
    const getByTag = await fetch(`${base}/team/app/manifests/1`);
    expect(getByTag.headers.get('docker-content-digest')).toBe(digest);
    expect(sha256(Buffer.from(await getByTag.arrayBuffer()))).toBe(digest);
    // a cache revalidating an unchanged tag gets no body
    const again = await fetch(`${base}/team/app/manifests/1`, { headers: { 'if-none-match': getByTag.headers.get('etag')! } });
    expect(again.status).toBe(304);
    const byDigest = await fetch(`${base}/team/app/manifests/${digest}`);
    expect(byDigest.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(byDigest.headers.get('docker-content-digest')).toBe(digest);
    expect(sha256(Buffer.from(await byDigest.arrayBuffer()))).toBe(digest);

    const layer = manifest.layers[0]!.digest;
    const blob = await fetch(`${base}/team/app/blobs/${layer}`);
    expect(blob.headers.get('docker-content-digest')).toBe(layer);
    expect(blob.headers.get('cache-control')).toContain('immutable');
    expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(layer);

    // Docker Hub's names: solo is docker.io/library/solo, asked for as solo or library/solo
    const solo = await served('library/solo', '1');
    for (const path of ['solo', 'library/solo']) {
      const r = await fetch(`${base}/${path}/manifests/1`, { method: 'HEAD' });
      expect(r.status, path).toBe(200);
      expect(r.headers.get('docker-content-digest'), path).toBe(solo.digest);
    }
    const unknown = await fetch(`${base}/team/app/manifests/2`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('docker-content-digest')).toBeNull();
    expect((await fetch(`${base}/other/manifests/1`)).status).toBe(404);
    expect((await fetch(`${base}/team/app/tags/list`)).status).toBe(404);
  });

  it('docker pulls a release by tag from the origin, every blob once, and by digest', async () => {
    const { digest, manifest } = await served('team/app', '1');
    const ref = `${E.TP_REGISTRY_ORIGIN}/team/app`;
    const requests = await requestsDuring(E.TP_NGINX_ORIGIN_LOG, () => docker('consumer', 'pull', `${ref}:1`));
    expect(await docker('consumer', 'image', 'inspect', '--format', '{{.Id}}', `${ref}:1`)).toBe(manifest.config.digest);
    expect(blobsIn(requests)).toEqual([manifest.config.digest, ...manifest.layers.map((l) => l.digest)].sort());
    await docker('consumer', 'pull', `${ref}@${digest}`);
    expect(await docker('consumer', 'image', 'inspect', '--format', '{{.Id}}', `${ref}@${digest}`)).toBe(manifest.config.digest);
  });

  it('after an update, docker pulls through the caching tier only the layers it lacks', async () => {
    const before = (await served('team/app', '1')).manifest;
    await push('app-v2.tar', 'team/app:1', '--compress', 'gzip');
    const { digest, manifest } = await served('team/app', '1');
    // the tag's digest follows the update at once, at the origin and through the cache, with no reload
    for (const host of [E.TP_REGISTRY_ORIGIN, E.TP_REGISTRY_CACHE]) {
      const head = await fetch(`http://${host}/v2/team/app/manifests/1`, { method: 'HEAD' });
      expect(head.headers.get('docker-content-digest'), host).toBe(digest);
    }
    const had = new Set(before.layers.map((l) => l.digest));
    const lacking = [manifest.config.digest, ...manifest.layers.map((l) => l.digest).filter((d) => !had.has(d))].sort();
    expect(lacking.length).toBeLessThan(manifest.layers.length + 1); // the update shares layers with v1
    const ref = `${E.TP_REGISTRY_CACHE}/team/app:1`;
    let origin: string[] = [];
    const cache = await requestsDuring(E.TP_NGINX_CACHE_LOG, async () => {
      origin = await requestsDuring(E.TP_NGINX_ORIGIN_LOG, () => docker('consumer', 'pull', ref));
    });
    expect(await docker('consumer', 'image', 'inspect', '--format', '{{.Id}}', ref)).toBe(manifest.config.digest);
    expect(blobsIn(cache)).toEqual(lacking);
    // the origin sees what the cache did not hold yet (all of it on a fresh cache), each at most once
    const fromOrigin = blobsIn(origin);
    expect(new Set(fromOrigin).size).toBe(fromOrigin.length);
    expect(lacking).toEqual(expect.arrayContaining(fromOrigin));
  });

  it('containerd (ctr --plain-http) pulls a zstd release through the caching tier', async () => {
    await wipeRepo();
    await push('app-v2.tar', 'edge/app:2');
    const { digest } = await served('edge/app', '2');
    const ref = `${E.TP_REGISTRY_CACHE}/edge/app:2`;
    await ctr('images', 'pull', '--plain-http', ref);
    const row = (await ctr('images', 'check', `name==${ref}`)).split('\n').find((l) => l.startsWith(`${ref} `)) ?? '';
    expect(row).toContain(digest);
    expect(row).toMatch(/complete \(\d+\/\d+\)/);
  });

  it('an encrypted release is not served; check does not warn of it (left out by design, as documented)', async () => {
    const keys = join(await tempDir(), 'site');
    expect((await tarport(['keys', 'generate', '--uid', 'site <site@example.invalid>', '--out', keys, '--type', 'ecc'])).code).toBe(0);
    await push('app-v1.tar', 'edge/secret:1', '--encrypt-to', `${keys}.pub.asc`);
    const r = await fetch(`http://${E.TP_REGISTRY_ORIGIN}/v2/edge/secret/manifests/1`);
    expect(r.status).toBe(404);
    const check = await tarport(['check', REPO, '--json']);
    expect(check.code).toBe(0);
    const warnings = (JSON.parse(check.stdout) as { warnings: { what: string }[] }).warnings;
    expect(warnings.filter((w) => w.what.startsWith('edge/secret'))).toEqual([]);
  });
});
