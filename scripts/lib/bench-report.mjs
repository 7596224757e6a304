#!/usr/bin/env node
// The end of scripts/bench: reads what the run measured in its work directory (jobs.jsonl and the
// jobs' output, sync.json, the *.time files, legacy.json of the parts' own baselines when they ran),
// prints the jobs and the ratios against issue 16's targets, and appends the run to the results
// file when one is named (every run is kept; BENCH_NOTE adds a note to the run). Usage:
//   bench-report.mjs WORKDIR DRIVER ARCHIVE_BYTES ROUNDS ELAPSED_SECONDS [quick|''] [RESULTS_FILE]
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { appendRun, jobRatios, meets, pullLoadRatios, ratioText, runtimeRatios, syncRatios } from './bench-results.mjs';

const [W, driver, archiveBytes, rounds, elapsed, quick, resultsFile] = process.argv.slice(2);
const R = Number(rounds);
const readJson = (f) => JSON.parse(readFileSync(f, 'utf8'));
const time = (l) => readFileSync(`${W}/${l}.time`, 'utf8').trim().split(/\s+/).map(Number);
const median = (l) => {
  const v = Array.from({ length: R }, (_, i) => time(`${l}_${i + 1}`)[0]).sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
};
const peakRss = (l) => Math.max(...Array.from({ length: R }, (_, i) => time(`${l}_${i + 1}`)[1]));

/** the jobs; a loopback row carries the bytes a shaped link counted for the same job */
function readJobs() {
  const all = readFileSync(`${W}/jobs.jsonl`, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  failed.push(...all.filter((j) => j.failed));
  const jobs = all.filter((j) => !j.failed);
  for (const j of jobs) {
    if (j.bytes !== null) continue;
    const shaped = jobs.find((o) => o.case === j.case && o.contender === j.contender && o.bytes !== null);
    if (shaped) Object.assign(j, { bytes: shaped.bytes, bytesFrom: shaped.link });
  }
  return jobs;
}

/** per link: what the update's pull read against v2's new layers (compressed) + 64 KiB */
function updateBytes(jobs) {
  const out = {};
  for (const link of ['loopback', '1gbit', '100mbit']) {
    const dir = `${W}/jobs/releases-${link}`;
    const pullFile = `${W}/jobs/update-tarport-${link}.pull.json`;
    if (!existsSync(dir) || !existsSync(pullFile)) continue;
    // every record under releases/ (however the name is laid out in folders), not the signatures
    const recs = readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith('.json')).map((f) => readJson(`${dir}/${f}`));
    const have = new Set(recs.filter((r) => r.name?.endsWith('app') && r.tag === '1').flatMap((r) => r.layers.map((l) => l.diffId)));
    const v2 = recs.find((r) => r.tag === '2');
    if (!v2) continue;
    const newCompressedBytes = v2.layers.filter((l) => !have.has(l.diffId)).reduce((n, l) => n + l.size, 0);
    const bytesRead = readJson(pullFile).transport?.bytesRead ?? null;
    const job = jobs.find((j) => j.case === 'update' && j.contender === 'tarport' && j.link === link);
    out[link] = { bytesRead, newCompressedBytes, linkBytes: job?.bytes ?? null };
  }
  return out;
}

/** sync dir → dir, cp -r + sha256sum -c, and the physical limit of copying and hashing those bytes */
function syncRow() {
  if (!existsSync(`${W}/sync.json`)) return null; // a run stopped before it (printed as not measured)
  const s = readJson(`${W}/sync.json`);
  const limitSeconds = Math.max(s.bytes / (s.diskMBps * 1e6), s.bytes / (s.cores * s.sha256MBpsPerCore * 1e6));
  return { ...s, seconds: median('syncdir'), cpSha256sumSeconds: median('base_cpsum'), limitSeconds, peakRssKiB: peakRss('syncdir') };
}

function moreRatios(upd, sync, dirPush, legacy) {
  const out = [];
  for (const [link, u] of Object.entries(upd)) {
    if (u.bytesRead !== null) out.push({ name: `update, ${link}: bytes pulled / (new layer compressed + 64 KiB)`, value: u.bytesRead / (u.newCompressedBytes + 65536), target: 1.05, better: 'lower', detail: `${u.bytesRead} B vs ${u.newCompressedBytes} B` });
  }
  if (dirPush) out.push({ name: 'push to a directory / skopeo copy into oci:', value: dirPush.seconds / dirPush.skopeoSeconds, target: 1.0, better: 'lower', detail: `${dirPush.seconds.toFixed(2)} s vs ${dirPush.skopeoSeconds.toFixed(2)} s` });
  if (sync) out.push(...syncRatios(sync));
  if (legacy) {
    out.push(...pullLoadRatios(legacy.pullLoad));
    const e = legacy.encryption;
    out.push({ name: 'encrypt: gpg / tarport (speed ratio)', value: e.gpgEncryptSeconds / e.encryptSeconds, target: 0.8, better: 'higher', detail: `${e.encryptSeconds.toFixed(2)} s vs ${e.gpgEncryptSeconds.toFixed(2)} s` });
    out.push({ name: 'decrypt: gpg / tarport (speed ratio)', value: e.gpgDecryptSeconds / e.decryptSeconds, target: 0.8, better: 'higher', detail: `${e.decryptSeconds.toFixed(2)} s vs ${e.gpgDecryptSeconds.toFixed(2)} s` });
    // issue 14's: pull into containerd and Podman against their own loads, the containerd update's bytes
    out.push(...runtimeRatios({ containerd: legacy.containerd, podman: legacy.podman, containerdUpdate: legacy.containerd.update }));
  }
  return out;
}

function printJobs(jobs) {
  console.log(['job', 'contender', 'link', 'seconds', 'bytes', 'CPU s', 'client CPU s', 'peak RSS'].map((h, i) => h.padEnd([8, 10, 9, 9, 14, 8, 13, 9][i])).join(' '));
  for (const j of jobs) {
    const bytes = j.bytes === null ? '–' : `${(j.bytes / 1e6).toFixed(1)} MB${j.bytesFrom ? '*' : ''}`;
    console.log([j.case, j.contender, j.link, j.seconds.toFixed(2), bytes, j.cpuSeconds.toFixed(2), j.clientCpuSeconds.toFixed(2), `${(j.peakRssKiB / 1024).toFixed(0)} MiB`].map((c, i) => String(c).padEnd([8, 10, 9, 9, 14, 8, 13, 9][i])).join(' '));
  }
  console.log('* bytes as counted on a shaped link for the same job (a loopback row goes through no proxy)');
  for (const f of failed) console.log(`FAILED: ${f.case} ${f.contender} ${f.link}: ${f.error}`);
}

/** jobs that failed: listed, never counted in a ratio */
const failed = [];
const jobs = readJobs();
const upd = updateBytes(jobs);
const sync = syncRow();
const dirPush = existsSync(`${W}/skopeo_oci_${R}.time`) ? { seconds: median('dirpush'), skopeoSeconds: median('skopeo_oci'), peakRssKiB: peakRss('dirpush'), skopeoPeakRssKiB: peakRss('skopeo_oci') } : null;
const legacy = existsSync(`${W}/legacy.json`) ? readJson(`${W}/legacy.json`) : null;
const ratios = [...jobRatios(jobs), ...moreRatios(upd, sync, dirPush, legacy)];

printJobs(jobs);
if (sync) console.log(`\nsync dir → dir of ${(sync.bytes / 1e6).toFixed(0)} MB in ${sync.objects} objects: ${sync.seconds.toFixed(2)} s; cp -r + sha256sum -c ${sync.cpSha256sumSeconds.toFixed(2)} s; physical limit ${sync.limitSeconds.toFixed(2)} s (disk ${sync.diskMBps} MB/s, SHA-256 ${sync.sha256MBpsPerCore} MB/s × ${sync.cores} cores)`);
else console.log('\nsync dir → dir and push to a directory: not measured (the run stopped before them)');
console.log(`storage driver: ${driver}; the run took ${Math.round(Number(elapsed) / 60)} min\n`);
for (const r of ratios) {
  const target = r.target === null ? '' : `${r.better === 'lower' ? '<=' : '>='} ${r.target} ${meets(r) ? 'met' : 'NOT MET'}`;
  console.log(`${r.name.padEnd(62)} ${ratioText(r).padStart(6)}  ${target.padEnd(16)} ${r.detail}`);
}

if (resultsFile) {
  const run = {
    date: new Date().toISOString(), quick: quick === 'quick', ...(process.env.BENCH_NOTE ? { note: process.env.BENCH_NOTE } : {}), storageDriver: driver, node: process.version, cores: availableParallelism(),
    archiveBytes: Number(archiveBytes), rounds: R, elapsedSeconds: Number(elapsed),
    jobs, ...(failed.length ? { failedJobs: failed } : {}), ratios, updateBytes: upd, ...(dirPush ? { dirPush } : {}), ...(sync ? { syncDirToDir: sync } : {}), ...(legacy ? { parts: legacy } : {}),
  };
  const before = existsSync(resultsFile) ? readJson(resultsFile) : undefined;
  writeFileSync(resultsFile, JSON.stringify(appendRun(before, run), null, 2) + '\n');
}
