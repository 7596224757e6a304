// The thread of ThreadedZstd: decompresses what it is sent into 1 MiB buffers and sends them back
// (transferred, not copied). Messages in: { data: Uint8Array } | { end: true }; out: { out } per
// full buffer, { took: true } when an input chunk is consumed, { done: true } or { error }.
import { parentPort } from 'node:worker_threads';
import { ZstdDecompress } from './compression.js';

const port = parentPort!;
const z = new ZstdDecompress();
z.on('data', (b: Buffer) => {
  // a buffer of our own (ZstdDecompress never reuses one): its memory can move to the other thread
  const ab = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b.buffer : b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  port.postMessage({ out: ab }, [ab as ArrayBuffer]);
});
z.on('error', (e) => port.postMessage({ error: e.message }));
z.on('end', () => port.postMessage({ done: true }));
port.on('message', (m: { data?: Uint8Array; end?: boolean }) => {
  if (m.end) z.end();
  else z.write(Buffer.from(m.data!.buffer, m.data!.byteOffset, m.data!.byteLength), () => port.postMessage({ took: true }));
});
