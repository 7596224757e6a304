#!/usr/bin/env node
// HTTPS download: tarport's transport (the read a pull makes into its cache: readTo, a sink that
// drops the bytes) against curl of the same file from the same nginx origin, to /dev/null, both
// verifying TLS with the same CA. Rounds alternate who goes first; medians. Prints JSON seconds.
//   node scripts/lib/bench-https.mjs BASE_URL FILE_NAME SIZE CA ROUNDS
import { execFileSync } from 'node:child_process';
import { openTransport, parseLocation } from '../../dist/transport/index.js';

const [base, name, size, ca, rounds] = process.argv.slice(2);
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const t = await openTransport(parseLocation(base), { ca });
await t.stat(name); // connect outside the timing, as curl's handshake is cheap too

async function ours() {
  const s = performance.now();
  let n = 0;
  await t.readTo(name, (c) => void (n += c.length));
  if (n !== Number(size)) throw new Error(`tarport read ${n} bytes of ${size}`);
  return (performance.now() - s) / 1000;
}

function curl() {
  const out = execFileSync('curl', ['-sS', '--fail', '--max-time', '600', '--cacert', ca, '-o', '/dev/null', '-w', '%{time_total} %{size_download}', `${base}/${name}`]).toString().split(' ');
  if (Number(out[1]) !== Number(size)) throw new Error(`curl read ${out[1]} bytes of ${size}`);
  return Number(out[0]);
}

const tp = [];
const cu = [];
for (let r = 0; r < Number(rounds); r++) {
  if (r % 2) {
    cu.push(curl());
    tp.push(await ours());
  } else {
    tp.push(await ours());
    cu.push(curl());
  }
}
await t.close();
console.log(JSON.stringify({ tarport: median(tp), curl: median(cu), ratio: median(cu) / median(tp), rounds: { tarport: tp, curl: cu } }));
