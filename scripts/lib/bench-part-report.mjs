#!/usr/bin/env node
// The end of `BENCH_ONLY=sync` and `BENCH_ONLY=layers scripts/bench`: reads what bench-sync.sh or
// bench-layers.sh measured in the work directory (the *.time files: wall, peak RSS, user and system
// CPU seconds; sync.json; the load averages after each measurement), prints every round with its CPU
// seconds and load, the medians and issue 16's ratios, and appends the run to the results file as a
// run of that part (`only: "sync"` / `"layers"`; BENCH_NOTE adds a note). Usage:
//   bench-part-report.mjs sync|layers WORKDIR DRIVER ROUNDS ELAPSED_SECONDS [RESULTS_FILE]
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { appendRun, layerRatios, meets, syncRatios } from './bench-results.mjs';

const [part, W, driver, rounds, elapsed, resultsFile] = process.argv.slice(2);
const R = Number(rounds);
const readJson = (f) => JSON.parse(readFileSync(f, 'utf8'));
/** one measurement: [wall s, peak RSS KiB, user s, system s] */
const time = (l) => readFileSync(`${W}/${l}.time`, 'utf8').trim().split(/\s+/).map(Number);
const labels = (l) => Array.from({ length: R }, (_, i) => `${l}_${i + 1}`);
const mid = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// label → [1, 5, 15 minute load averages] right after that measurement
const load = Object.fromEntries(readFileSync(`${W}/${part}-load.txt`, 'utf8').trim().split('\n').filter(Boolean).map((l) => {
  const [label, ...v] = l.split(' ');
  return [label, v.map(Number)];
}));

/** a measured command over the rounds: every round's wall and CPU seconds, their medians, the largest peak RSS */
function series(l) {
  const t = labels(l).map(time);
  const seconds = t.map((x) => x[0]);
  const cpuSeconds = t.map((x) => Math.round((x[2] + x[3]) * 100) / 100);
  return { seconds: mid(seconds), cpuSeconds: mid(cpuSeconds), rounds: seconds, cpuRounds: cpuSeconds, peakRssKiB: Math.max(...t.map((x) => x[1])), loads: labels(l).map((x) => load[x]?.[0] ?? null) };
}
const show = (name, s) => console.log(`${name.padEnd(34)} ${s.rounds.map((v) => v.toFixed(2)).join(' / ')} s (median ${s.seconds.toFixed(2)}); CPU ${s.cpuRounds.join(' / ')} s (median ${s.cpuSeconds}); peak RSS ${(s.peakRssKiB / 1024).toFixed(0)} MiB; load ${s.loads.join(' / ')}`);

let result;
let ratios;
if (part === 'sync') {
  const s = readJson(`${W}/sync.json`);
  const limitSeconds = Math.max(s.bytes / (s.diskMBps * 1e6), s.bytes / (s.cores * s.sha256MBpsPerCore * 1e6));
  const tp = series('syncdir');
  const base = series('base_cpsum');
  show('tarport sync', tp);
  show('cp -r && sync && sha256sum -c', base);
  console.log(`${(s.bytes / 1e6).toFixed(0)} MB in ${s.objects} objects; physical limit ${limitSeconds.toFixed(2)} s (disk ${s.diskMBps} MB/s, SHA-256 ${s.sha256MBpsPerCore} MB/s × ${s.cores} cores)`);
  result = { syncDirToDir: { ...s, seconds: tp.seconds, cpSha256sumSeconds: base.seconds, limitSeconds, peakRssKiB: tp.peakRssKiB, tarport: tp, baseline: base } };
  ratios = [...syncRatios(result.syncDirToDir), { name: 'sync dir → dir, CPU: (cp -r + sha256sum -c) / sync', value: base.cpuSeconds / tp.cpuSeconds, target: null, better: 'higher', detail: `${tp.cpuSeconds} CPU s vs ${base.cpuSeconds} CPU s` }];
} else if (part === 'layers') {
  const l = { push: { many: series('push_many'), few: series('push_few') }, pull: { many: series('pull_many'), few: series('pull_few') } };
  for (const [k, s] of [['push, 40 layers', l.push.many], ['push, 4 layers', l.push.few], ['pull and load, 40 layers', l.pull.many], ['pull and load, 4 layers', l.pull.few]]) show(k, s);
  // docker load -i of the same archives (runs before this was measured lack it)
  const dockerLoad = existsSync(`${W}/load_many_1.time`) ? { many: series('load_many'), few: series('load_few') } : undefined;
  if (dockerLoad) for (const [k, s] of [['docker load -i, 40 layers', dockerLoad.many], ['docker load -i, 4 layers', dockerLoad.few]]) show(k, s);
  const io = (f) => (existsSync(`${W}/${f}.out`) ? readJson(`${W}/${f}.out`).transport ?? null : null);
  const requests = { pushMany: io('push_many_1'), pushFew: io('push_few_1'), pullMany: io('pull_many_1'), pullFew: io('pull_few_1') };
  console.log(`transport (round 1): ${Object.entries(requests).map(([k, v]) => `${k} ${v?.requests ?? '?'} requests`).join(', ')}`);
  result = { layers: { ...l, ...(dockerLoad ? { dockerLoad } : {}), transport: requests } };
  ratios = [
    ...layerRatios({ push: { many: l.push.many.seconds, few: l.push.few.seconds }, pull: { many: l.pull.many.seconds, few: l.pull.few.seconds } }),
    ...(dockerLoad ? [{ name: '40 layers / 4 layers, docker load -i (the daemon alone)', value: dockerLoad.many.seconds / dockerLoad.few.seconds, target: null, better: 'lower', detail: `${dockerLoad.many.seconds.toFixed(2)} s vs ${dockerLoad.few.seconds.toFixed(2)} s` }] : []),
    { name: '40 layers / 4 layers, CPU of push + pull and load', value: (l.push.many.cpuSeconds + l.pull.many.cpuSeconds) / (l.push.few.cpuSeconds + l.pull.few.cpuSeconds), target: null, better: 'lower', detail: `${(l.push.many.cpuSeconds + l.pull.many.cpuSeconds).toFixed(2)} CPU s vs ${(l.push.few.cpuSeconds + l.pull.few.cpuSeconds).toFixed(2)} CPU s (tarport's process)` },
  ];
} else {
  console.error(`bench-part-report.mjs: no part ${part} (sync, layers)`);
  process.exit(2);
}
const loads = Object.values(load).map((v) => v[0]);
console.log(`load average (1 min) after each measurement: ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} on ${availableParallelism()} cores; storage driver ${driver}; ${Math.round(Number(elapsed) / 60)} min\n`);
for (const r of ratios) console.log(`${r.name.padEnd(58)} ${r.value.toFixed(2).padStart(6)}  ${(r.target === null ? '' : `${r.better === 'lower' ? '<=' : '>='} ${r.target} ${meets(r) ? 'met' : 'NOT MET'}`).padEnd(16)} ${r.detail}`);

if (resultsFile) {
  const run = {
    date: new Date().toISOString(), only: part, ...(process.env.BENCH_NOTE ? { note: process.env.BENCH_NOTE } : {}), storageDriver: driver, node: process.version, cores: availableParallelism(),
    rounds: R, elapsedSeconds: Number(elapsed), loadAverages: load, ...result, ratios,
  };
  const before = existsSync(resultsFile) ? readJson(resultsFile) : undefined;
  writeFileSync(resultsFile, JSON.stringify(appendRun(before, run), null, 2) + '\n');
  console.log(`\nappended this run to ${resultsFile}`);
}
