#!/usr/bin/env node
// Times one upload and one download of FILE through tarport's transport for URL (credentials from
// TARPORT_PASSWORD, TP_FTPS_CA, TP_SFTP_IDENTITY, TP_SFTP_KNOWN_HOSTS). Prints JSON seconds.
// The calls are the ones push and pull make: push uploads its spooled file (write with a file
// source), pull downloads into its cache through a sink (readTo); here the sink drops the bytes, as
// the baselines write to /dev/null.
import { stat } from 'node:fs/promises';
import { openTransport, parseLocation } from '../../dist/transport/index.js';

const [url, file] = process.argv.slice(2);
const t = await openTransport(parseLocation(url), {
  password: process.env.TARPORT_PASSWORD,
  ca: process.env.TP_FTPS_CA,
  identity: process.env.TP_SFTP_IDENTITY,
  knownHosts: process.env.TP_SFTP_KNOWN_HOSTS,
});
const size = (await stat(file)).size;
await t.stat('warm-up'); // connect outside the timing, as the baselines' handshakes are cheap too
let s = performance.now();
await t.write('bench.bin', { file });
const upload = (performance.now() - s) / 1000;
s = performance.now();
let n = 0;
await t.readTo('bench.bin', (c) => void (n += c.length));
const download = (performance.now() - s) / 1000;
if (n !== size) throw new Error(`downloaded ${n} bytes of ${size}`);
await t.remove('bench.bin');
await t.close();
console.log(JSON.stringify({ upload, download }));
