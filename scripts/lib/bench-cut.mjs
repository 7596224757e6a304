#!/usr/bin/env node
// Bytes carried by an upload and a download that are each cut twice, against the same pair uncut,
// through the cutting proxy of the tests: FTP (vsftpd, data connections counted) and SFTP (OpenSSH,
// the whole SSH stream counted). The calls are push's and pull's: write from a file, readTo.
// Usage: bench-cut.mjs FILE WORKDIR (servers from TP_* as scripts/test sets them). Prints JSON.
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openTransport, parseLocation } from '../../dist/transport/index.js';
import { CuttingProxy } from './cutproxy.mjs';

const [file, work] = process.argv.slice(2);
const size = (await stat(file)).size;
const env = process.env;
const portOf = (url) => Number(/@127\.0\.0\.1:(\d+)/.exec(url)[1]);
const withPort = (url, port) => url.replace(/@127\.0\.0\.1:\d+/, `@127.0.0.1:${port}`);

/** known_hosts that also names the SFTP server's key under the proxies' ports */
async function knownHosts(ports) {
  const line = (await readFile(env.TP_SFTP_KNOWN_HOSTS, 'utf8')).trim();
  const key = line.split(/\s+/).slice(1).join(' ');
  const f = join(work, `known_hosts_${ports.join('_')}`);
  await writeFile(f, [line, ...ports.map((p) => `[127.0.0.1]:${p} ${key}`)].join('\n') + '\n');
  return f;
}

async function pair(url, mode, upCuts, downCuts) {
  const target = { host: '127.0.0.1', port: portOf(url) };
  const up = await new CuttingProxy(target, upCuts.map((f) => Math.floor(f * size)), mode).start();
  const down = await new CuttingProxy(target, downCuts.map((f) => Math.floor(f * size)), mode).start();
  const opts = { password: env.TARPORT_PASSWORD, identity: env.TP_SFTP_IDENTITY, knownHosts: await knownHosts([up.port, down.port]) };
  try {
    const tu = await openTransport(parseLocation(`${withPort(url, up.port)}/bench-cut`), opts);
    await tu.write('blob', { file });
    await tu.close();
    const td = await openTransport(parseLocation(`${withPort(url, down.port)}/bench-cut`), opts);
    let n = 0;
    await td.readTo('blob', (c) => void (n += c.length));
    if (n !== size) throw new Error(`downloaded ${n} bytes of ${size}`);
    await td.remove('blob');
    await td.close();
    return { bytes: up.bytes + down.bytes, cuts: up.cuts + down.cuts };
  } finally {
    await up.close();
    await down.close();
  }
}

const out = {};
for (const [name, url, mode] of [
  ['ftp', env.TP_FTP_URL, 'ftp'],
  ['sftp', env.TP_SFTP_URL, 'stream'],
]) {
  const cut = await pair(url, mode, [0.3, 0.65], [0.25, 0.7]);
  const uncut = await pair(url, mode, [], []);
  if (cut.cuts !== 4) throw new Error(`${name}: the proxies cut ${cut.cuts} times, not 4`);
  out[name] = { cutBytes: cut.bytes, uncutBytes: uncut.bytes, ratio: cut.bytes / uncut.bytes };
}
console.log(JSON.stringify(out));
