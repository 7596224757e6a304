// A child process for the zstd memory-bound tests (test/unit/archive/compression.test.ts and
// codec.test.ts): the unit project's files run on worker threads that share one process, whose
// resident size is what a decoder must keep flat, so the measurement needs a process of its own.
// Decodes OUT_MIB of zeros out of four zstd frames of a quarter each (a few KiB in, one input
// chunk), read slowly, each chunk given back once counted, and prints {"n": bytes out, "peak":
// resident growth over the start}.
// DECODER: "stream" (ZstdDecompress), "threaded" (threadedDecompressor), or a codec name
// ("zstd-napi", "node-zlib": zstdCompressor and zstdDecompressor of that codec).
// DECODER "layers": OUT_MIB is a count of layers of 2 MiB (half random bytes), each decoded by a
// ZstdDecompress of its own, one after another, every chunk given back as a load gives it back:
// prints {"n", "peak", "layers"}, the growth over the whole run.
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ZstdDecompress, compressor, preferZstdCodec, threadedDecompressor, useDecompressionThread, zstdCompressor, zstdDecompressor } from '../dist/archive/compression.js';
import { giveBack } from '../dist/lending.js';

const [decoder, outMiB] = process.argv.slice(2);
if (decoder === 'layers') {
  preferZstdCodec('zstd-napi');
  const count = Number(outMiB);
  const layers = [];
  for (let i = 0; i < count; i++) {
    const parts = [];
    const raw = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(1 << 20, i)]);
    await pipeline(Readable.from([raw]), compressor('zstd'), new Writable({ write: (c, _e, cb) => (parts.push(Buffer.from(c)), cb()) }));
    layers.push(Buffer.concat(parts));
  }
  const base = process.memoryUsage().rss;
  let peak = 0;
  let n = 0;
  for (const z of layers) {
    await pipeline(Readable.from([z]), new ZstdDecompress(), new Writable({ write: (c, _e, cb) => ((n += c.length), giveBack(c), cb()) }));
    peak = Math.max(peak, process.memoryUsage().rss - base);
  }
  process.stdout.write(JSON.stringify({ n, peak, layers: count }) + '\n');
  process.exit(0);
}
const out = Number(outMiB) << 20;
const codec = decoder === 'stream' || decoder === 'threaded' ? undefined : decoder;
if (!codec) preferZstdCodec('zstd-napi');

const parts = [];
const zero = Buffer.alloc(1 << 20);
await pipeline(
  Readable.from((function* () {
    for (let i = 0; i < out / 4 / (1 << 20); i++) yield zero;
  })()),
  codec ? zstdCompressor(codec) : compressor('zstd'),
  new Writable({ write: (c, _e, cb) => (parts.push(c), cb()) }),
);
const frame = Buffer.concat(parts);
const bomb = Buffer.concat([frame, frame, frame, frame]);
// before the decode: the threaded decoder moves its input to the thread
const inBytes = bomb.length;
useDecompressionThread(decoder === 'threaded');
const dec = codec ? zstdDecompressor(codec) : decoder === 'stream' ? new ZstdDecompress() : await threadedDecompressor('zstd');
const base = process.memoryUsage().rss;
let peak = 0;
let n = 0;
let i = 0;
await pipeline(
  Readable.from([bomb]),
  dec,
  new Writable({
    highWaterMark: 1,
    write: (c, _e, cb) => {
      n += c.length;
      if (++i % 16 === 0) peak = Math.max(peak, process.memoryUsage().rss - base);
      // given back as a load gives it back (src/lending.ts): a chunk left to the collector counts
      // in the resident size until it runs, which made the figure depend on when it ran
      giveBack(c);
      setImmediate(cb);
    },
  }),
);
process.stdout.write(JSON.stringify({ n, peak, in: inBytes, decoder: dec.constructor.name }) + '\n');
