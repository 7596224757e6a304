#!/usr/bin/env node
// What an operation's abort signal leaves behind with a long-lived one (docs/operations.md,
// "Memory"): N operations with withSignal (dist/signals.js), then N with AbortSignal.any,
// the heap measured after a forced collection. Run with --expose-gc, after npm run build:
//   node --expose-gc scripts/bench-signals.mjs [N]
import { withSignal } from '../dist/signals.js';

if (typeof globalThis.gc !== 'function') {
  console.error('bench-signals: run node with --expose-gc');
  process.exit(2);
}
const n = Number(process.argv[2] ?? 900_000);
const heapMb = async () => {
  await new Promise((r) => setTimeout(r, 50));
  globalThis.gc();
  return Math.round(process.memoryUsage().heapUsed / 1e6);
};
const agent = new AbortController();
const transport = new AbortController();
// withSignal first: Node 24 frees some of what AbortSignal.any held, late, while later work runs
const start = await heapMb();
for (let i = 0; i < n; i++) await withSignal([agent.signal, transport.signal], async (s) => s);
const afterWith = await heapMb();
for (let i = 0; i < n; i++) AbortSignal.any([agent.signal, transport.signal]);
const afterAny = await heapMb();
// the shape of a call with a source of its own beside the long-lived one (resume.ts, fetches.ts)
for (let i = 0; i < n; i++) AbortSignal.any([agent.signal, new AbortController().signal]);
const afterAnyOwn = await heapMb();
console.log(`${process.version}: heap ${start} MB; after ${n} operations with withSignal ${afterWith} MB; after ${n} more with AbortSignal.any of two long-lived signals ${afterAny} MB; after ${n} more of one long-lived and one of their own ${afterAnyOwn} MB`);
