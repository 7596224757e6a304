#!/usr/bin/env node
// tarport's streaming OpenPGP, for scripts/bench:
//   encrypt IN OUT PUBKEY | decrypt IN OUT SECKEY
//   reframe IN OUT        the same message with its encrypted packet in 1-byte partial lengths after
//                         a first of 512 (the slowest framing RFC 4880 allows): decrypt both, compare
//   bomb OUT PUBKEY MIB   a config an attacker with the public key makes: MIB of zeros, deflated
//   config IN SECKEY      decrypts IN as pull decrypts a config (capped); exit 0 only if refused
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import { constants, createDeflateRaw } from 'node:zlib';
import * as openpgp from 'openpgp';
import { decryptStream, encryptStream, loadDecryptionKey, loadRecipients } from '../../dist/crypto/index.js';
import { openMessage } from '../../dist/crypto/seipd.js';
import { BodyParser } from '../../dist/crypto/packets.js';
import { decryptConfig } from '../../dist/consumer/encryption.js';

const [op, input, output, key] = process.argv.slice(2);
const NO_LIMIT = { maxBytes: Number.MAX_SAFE_INTEGER };

if (op === 'encrypt') {
  await pipeline(await encryptStream(createReadStream(input, { highWaterMark: 1 << 20 }), await loadRecipients([key])), createWriteStream(output, { highWaterMark: 1 << 20 }));
} else if (op === 'decrypt') {
  await pipeline(await decryptStream(createReadStream(input, { highWaterMark: 1 << 20 }), await loadDecryptionKey(key), input, NO_LIMIT), createWriteStream(output, { highWaterMark: 1 << 20 }));
} else if (op === 'reframe') {
  await reframe(input, output);
} else if (op === 'bomb') {
  await bomb(input, output, Number(key));
} else if (op === 'config') {
  try {
    const config = await decryptConfig(await readFile(input), await loadDecryptionKey(output), 'bomb config');
    console.error(`accepted: ${config.length} bytes`);
    process.exit(1);
  } catch (e) {
    console.error(`refused: ${e.message}`);
  }
} else {
  console.error(`unknown operation ${op}`);
  process.exit(2);
}

async function reframe(from, to) {
  const { pkesk, reader, seipd } = await openMessage(createReadStream(from, { highWaterMark: 1 << 20 }), from);
  const out = createWriteStream(to, { highWaterMark: 1 << 20 });
  const write = async (b) => {
    if (!out.write(b)) await once(out, 'drain');
  };
  await write(Buffer.concat([pkesk, Buffer.from([0xc0 | 18])]));
  const body = new BodyParser(seipd.len, from);
  let first = Buffer.alloc(0);
  for (let raw = await reader.some(1 << 20); raw; raw = await reader.some(1 << 20)) {
    const pieces = [];
    body.push(raw, pieces);
    for (let p of pieces) {
      if (first) {
        const all = Buffer.concat([first, p]);
        if (all.length < 512) {
          first = all;
          continue;
        }
        await write(Buffer.concat([Buffer.from([0xe0 | 9]), all.subarray(0, 512)]));
        p = all.subarray(512);
        first = undefined;
      }
      const framed = Buffer.allocUnsafe(p.length * 2);
      for (let i = 0; i < p.length; i++) {
        framed[2 * i] = 0xe0;
        framed[2 * i + 1] = p[i];
      }
      await write(framed);
    }
  }
  if (first) throw new Error('message shorter than 512 bytes');
  await write(Buffer.from([0])); // the last part: definite, empty
  out.end();
  await once(out, 'finish');
}

async function bomb(to, pubFile, mib) {
  const z = createDeflateRaw({ level: 9, strategy: constants.Z_DEFAULT_STRATEGY });
  const chunks = [];
  z.on('data', (c) => chunks.push(c));
  const ended = once(z, 'end');
  z.write(Buffer.from([0xaf, 0x62, 0, 0, 0, 0, 0])); // literal data of indeterminate length
  const zeros = Buffer.alloc(1 << 20);
  for (let i = 0; i < mib; i++) if (!z.write(zeros)) await once(z, 'drain');
  z.end();
  await ended;
  const plaintext = Buffer.concat([Buffer.from([0xa3, 0x01]), ...chunks]); // compressed (ZIP), indeterminate
  const sessionKey = randomBytes(32);
  const recipient = await openpgp.readKey({ armoredKey: await readFile(pubFile, 'utf8') });
  const pkesk = Buffer.from(await openpgp.encryptSessionKey({ data: sessionKey, algorithm: 'aes256', encryptionKeys: recipient, format: 'binary' }));
  const prefix = randomBytes(16);
  const head = Buffer.concat([prefix, prefix.subarray(14, 16), plaintext]);
  const mdc = createHash('sha1').update(head).update(Buffer.from([0xd3, 0x14])).digest();
  const c = createCipheriv('aes-256-cfb', sessionKey, Buffer.alloc(16));
  const body = Buffer.concat([Buffer.from([1]), c.update(Buffer.concat([head, Buffer.from([0xd3, 0x14]), mdc])), c.final()]);
  const len = Buffer.alloc(5);
  len[0] = 0xff;
  len.writeUInt32BE(body.length, 1);
  await writeFile(to, Buffer.concat([pkesk, Buffer.from([0xc0 | 18]), len, body]));
}
