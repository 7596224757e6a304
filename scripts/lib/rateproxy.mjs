#!/usr/bin/env node
// A link of a given speed in front of a server, for scripts/bench: the tests' cutting proxy with a
// rate and no cuts. Usage: rateproxy.mjs TARGET_PORT ftp|stream BYTES_PER_SECOND STATS_FILE
// Prints the port it listens on; keeps STATS_FILE holding the bytes carried so far (both ways; the
// data connections in ftp mode), rewritten within 100 ms of a change. Runs until killed.
import { writeFileSync } from 'node:fs';
import { CuttingProxy } from './cutproxy.mjs';

const [port, mode, rate, stats] = process.argv.slice(2);
if (!port || (mode !== 'ftp' && mode !== 'stream') || !(Number(rate) >= 0) || !stats) {
  console.error('usage: rateproxy.mjs TARGET_PORT ftp|stream BYTES_PER_SECOND STATS_FILE');
  process.exit(2);
}
const proxy = await new CuttingProxy({ host: '127.0.0.1', port: Number(port) }, [], mode, { rate: Number(rate) }).start();
let written = -1;
const flush = () => {
  if (proxy.bytes !== written) writeFileSync(stats, `${(written = proxy.bytes)}\n`);
};
flush();
setInterval(flush, 100);
console.log(proxy.port);
