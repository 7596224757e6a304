#!/usr/bin/env node
// Idle poll cost with 10 and with 1,000 releases: requests, bytes and time of 50 idle polls each,
// after one full pull (which loads one small image into DOCKER_HOST). Prints JSON.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeDemoArchives } from '../../dist/archive/index.js';
import { pull } from '../../dist/consumer/index.js';
import { DockerClient, DockerRuntime } from '../../dist/runtime/index.js';
import { DEFAULT_CATALOG_TTL_MS, publishArchive } from '../../dist/producer/index.js';
import { Repository } from '../../dist/repo/index.js';
import { CountingTransport, FileTransport } from '../../dist/transport/index.js';

const out = {};
for (const n of [10, 1000]) {
  const dir = await mkdtemp(join(tmpdir(), 'tarport-idle-'));
  const repo = new Repository(new FileTransport(join(dir, 'repo')));
  const [v1] = await writeDemoArchives(dir);
  await publishArchive(repo, v1, { create: true, compression: 'zstd', catalogTtlMs: DEFAULT_CATALOG_TTL_MS, name: { name: 'bench/idle', tag: 't0' } });
  const first = (await repo.readCatalog()).catalog.releases[0];
  const { record } = await repo.readRecord(first, first);
  // the same image under n - 1 more tags, in one write (repo/ owns the write order)
  const tx = await repo.begin();
  try {
    for (let i = 1; i < n; i++) await tx.writeRecord({ ...record, tag: `t${i}` });
    await tx.publishCatalog({ ttlMs: DEFAULT_CATALOG_TTL_MS });
  } finally {
    await tx.end();
  }
  if ((await repo.readCatalog()).catalog.releases.length !== n) throw new Error(`the catalog does not list ${n} releases`);
  const counting = new CountingTransport(new FileTransport(join(dir, 'repo')));
  const r = new Repository(counting);
  const docker = new DockerRuntime(new DockerClient(process.env.DOCKER_HOST));
  const opts = { subscriptions: [{ name: 'bench/idle', tag: 't0' }], stateDir: join(dir, 'state') };
  await pull(r, docker, opts);
  const before = { ...counting.counters };
  const t = performance.now();
  for (let i = 0; i < 50; i++) await pull(r, docker, { ...opts, cheap: true });
  out[n] = { msPerPoll: (performance.now() - t) / 50, requestsPerPoll: (counting.counters.requests - before.requests) / 50, bytesPerPoll: (counting.counters.bytesRead - before.bytesRead) / 50 };
}
console.log(JSON.stringify(out));
