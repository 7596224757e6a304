#!/usr/bin/env node
// encrypt IN OUT PUBKEY | decrypt IN OUT SECKEY: tarport's streaming OpenPGP, for scripts/bench.
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { decryptStream, encryptStream, loadDecryptionKey, loadRecipients } from '../../dist/crypto/index.js';

const [op, input, output, key] = process.argv.slice(2);
const src = createReadStream(input, { highWaterMark: 1 << 20 });
const out = createWriteStream(output, { highWaterMark: 1 << 20 });
if (op === 'encrypt') await pipeline(await encryptStream(src, await loadRecipients([key])), out);
else await pipeline(await decryptStream(src, await loadDecryptionKey(key), input, { maxBytes: Number.MAX_SAFE_INTEGER }), out);
