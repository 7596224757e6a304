// The thread of ThreadedZstd: decompresses what it is sent into 1 MiB buffers and sends them back
// (transferred, not copied). In: { data: Uint8Array } | { end: true } | { credit: n } | { back:
// ArrayBuffer } (an output buffer the reader gave back, to decompress into again). Out: { out }
// per full buffer, { took: true } once an input chunk is used up, then { done: true } or { error, truncated }.
// At most CREDITS buffers are out unanswered: without credit the decompressor pauses, and a paused
// ZstdDecompress stops decompressing, so a tiny input of zeros cannot fill memory.
import { parentPort } from 'node:worker_threads';
import { isTarportError } from '../errors.js';
import { ZstdDecompress } from './compression.js';

const CREDITS = 4;
const port = parentPort!;
const z = new ZstdDecompress();
let out = 0;
z.on('data', (b: Buffer) => {
  // a buffer of our own (nothing on this thread gives one back): its memory can move to the other thread
  const ab = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b.buffer : b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  port.postMessage({ out: ab }, [ab as ArrayBuffer]);
  if (++out >= CREDITS) z.pause();
});
z.on('error', (e) => port.postMessage({ error: e.message, truncated: isTarportError(e) && e.truncated }));
z.on('end', () => port.postMessage({ done: true }));
port.on('message', (m: { data?: Uint8Array; end?: boolean; credit?: number; back?: ArrayBuffer }) => {
  // an output buffer the reader is done with, sent back to be decompressed into again
  if (m.back) z.adopt(Buffer.from(m.back));
  else if (m.credit) {
    out -= m.credit;
    if (out < CREDITS) z.resume();
  } else if (m.end) z.end();
  else z.write(Buffer.from(m.data!.buffer, m.data!.byteOffset, m.data!.byteLength), () => port.postMessage({ took: true }));
});
