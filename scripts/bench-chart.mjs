#!/usr/bin/env node
// Draws bench/ratios.svg (the latest run's ratios, earlier runs as dots) and the README's table of
// the latest run from a results file scripts/bench wrote (default bench/results.json). No network,
// no dependency. Usage: scripts/bench-chart.mjs [RESULTS_FILE] [--check] — --check writes nothing
// and exits 1 when the README or the chart is not what the results give.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { history, readmeTable, replaceBetweenMarkers, svgChart } from './lib/bench-results.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const check = args.includes('--check');
const file = args.find((a) => a !== '--check') ?? join(root, 'bench/results.json');
const hist = history(JSON.parse(readFileSync(file, 'utf8')));
const full = hist.runs.filter((r) => Array.isArray(r.jobs) && r.jobs.length);
const latest = full.at(-1);
if (!latest) {
  console.error(`${file}: no run with jobs (scripts/bench writes them)`);
  process.exit(2);
}
const svg = svgChart(hist);
const readmePath = join(root, 'README.md');
const readme = replaceBetweenMarkers(readFileSync(readmePath, 'utf8'), readmeTable(latest));
const svgPath = join(root, 'bench/ratios.svg');
if (check) {
  const same = (p, text) => {
    try { return readFileSync(p, 'utf8') === text; } catch { return false; }
  };
  if (!same(svgPath, svg) || !same(readmePath, readme)) {
    console.error('bench/ratios.svg or the README table differ from the results: run scripts/bench-chart.mjs');
    process.exit(1);
  }
} else {
  writeFileSync(svgPath, svg);
  writeFileSync(readmePath, readme);
}
