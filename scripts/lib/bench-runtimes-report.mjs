#!/usr/bin/env node
// The end of `BENCH_ONLY=runtimes scripts/bench`: reads what bench-runtimes.sh measured in the work
// directory (the *.time files, runtimes-update.json, runtimes-load.txt), prints issue 14's ratios
// with every round's seconds and the load averages, and appends the run to the results file as a run
// of that part (`only: "runtimes"`; BENCH_NOTE adds a note). Usage:
//   bench-runtimes-report.mjs WORKDIR DRIVER ARCHIVE_BYTES ROUNDS ELAPSED_SECONDS [RESULTS_FILE]
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { appendRun, meets, runtimeRatios } from './bench-results.mjs';

const [W, driver, archiveBytes, rounds, elapsed, resultsFile] = process.argv.slice(2);
const R = Number(rounds);
const readJson = (f) => JSON.parse(readFileSync(f, 'utf8'));
const time = (l) => readFileSync(`${W}/${l}.time`, 'utf8').trim().split(/\s+/).map(Number);
const roundsOf = (l) => Array.from({ length: R }, (_, i) => time(`${l}_${i + 1}`)[0]);
const median = (l) => roundsOf(l).sort((a, b) => a - b)[Math.floor(R / 2)];
const peakRss = (l) => Math.max(...Array.from({ length: R }, (_, i) => time(`${l}_${i + 1}`)[1]));

/** a pull into a runtime and its baseline: medians, every round, tarport's peak RSS */
const pair = (tp, base) => ({ seconds: median(tp), baselineSeconds: median(base), rounds: roundsOf(tp), baselineRounds: roundsOf(base), peakRssKiB: peakRss(tp) });

// label → [1, 5, 15 minute load averages] right after that measurement
const load = Object.fromEntries(readFileSync(`${W}/runtimes-load.txt`, 'utf8').trim().split('\n').filter(Boolean).map((l) => {
  const [label, ...v] = l.split(' ');
  return [label, v.map(Number)];
}));
// which way each Podman round loaded (registry-pull, or the upload fallback); absent in older runs
const pathFile = `${W}/runtimes-path.txt`;
const podmanPaths = existsSync(pathFile) ? readFileSync(pathFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => l.split(' ')[1]) : undefined;
const rt = {
  containerd: pair('ctrpull', 'base_ctr'),
  podman: { ...pair('podpull', 'base_podman'), ...(podmanPaths ? { paths: podmanPaths } : {}) },
  containerdUpdate: { ...readJson(`${W}/runtimes-update.json`), seconds: time('ctrupdate_1')[0] },
};
const ratios = runtimeRatios(rt);

for (const [name, p] of [['containerd', rt.containerd], ['Podman', rt.podman]]) {
  console.log(`${name}: tarport ${p.rounds.join(' / ')} s, baseline ${p.baselineRounds.join(' / ')} s (rounds, alternating)${p.paths ? `; loaded by ${p.paths.join(' / ')}` : ''}`);
}
const u = rt.containerdUpdate;
console.log(`containerd update: ${u.bytesRead} B read, ${u.newCompressedBytes} B new compressed; blobs added ${u.blobsAdded.length} (${u.newLayersAdded.length} new layer(s), ${u.v1LayersAddedAgain.length} of v1's layers)`);
const loads = Object.values(load).map((v) => v[0]);
console.log(`load average (1 min) after each measurement: ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} on ${availableParallelism()} cores; storage driver ${driver}; ${Math.round(Number(elapsed) / 60)} min\n`);
for (const r of ratios) console.log(`${r.name.padEnd(70)} ${r.value.toFixed(2).padStart(6)}  ${`<= ${r.target} ${meets(r) ? 'met' : 'NOT MET'}`.padEnd(16)} ${r.detail}`);

if (resultsFile) {
  const run = {
    date: new Date().toISOString(), only: 'runtimes', ...(process.env.BENCH_NOTE ? { note: process.env.BENCH_NOTE } : {}), storageDriver: driver, node: process.version, cores: availableParallelism(),
    archiveBytes: Number(archiveBytes), rounds: R, elapsedSeconds: Number(elapsed), loadAverages: load, runtimes: rt, ratios,
  };
  const before = existsSync(resultsFile) ? readJson(resultsFile) : undefined;
  writeFileSync(resultsFile, JSON.stringify(appendRun(before, run), null, 2) + '\n');
  console.log(`\nappended this run to ${resultsFile}`);
}
