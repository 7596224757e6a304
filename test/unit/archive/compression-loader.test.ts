import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressor, decompressor, searchZstdBinding, zstdCodec, zstdCodecInfo, zstdCodecs } from '../../../src/archive/compression.js';
import { shipped, shippedName } from '../../../src/archive/zstdnative.js';
import { ROOT, tempDir } from '../../helpers.js';

// src/archive/compression.ts, where zstd-napi's binary comes from (zstdnative.ts): the binary the
// package ships is used when zstd-napi is not installed, and one that does not load leaves the codec
// to Node's zlib (or to gzip, on a Node without zstd), never a crash.
const nodeHasZstd = Number(process.versions.node.split('.')[0]) >= 24 || /^(22\.(1[5-9]|[2-9]\d)|23\.([89]|\d\d))\./.test(process.versions.node);
let dir: string;

beforeAll(async () => {
  dir = await tempDir('tarport-loader-');
});
// the unit files share their modules: the next file finds the default places again
afterAll(() => searchZstdBinding(undefined));

function shippedFolder(name: string, bytes: Uint8Array): URL {
  mkdirSync(join(dir, name));
  writeFileSync(join(dir, name, shippedName()), bytes);
  return pathToFileURL(join(dir, name) + '/');
}

async function roundTrip(data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([data]), compressor('zstd'), decompressor('zstd'), new Writable({ write: (c: Buffer, _e, cb) => (out.push(Buffer.from(c)), cb()) }));
  return Buffer.concat(out);
}

describe("zstd-napi's binary", () => {
  it('the shipped file serves when zstd-napi is not installed, and says where it came from', async () => {
    const url = shippedFolder('ok', readFileSync(join(ROOT, 'node_modules/zstd-napi/build/Release/binding.node')));
    searchZstdBinding([() => undefined /* not installed */, () => shipped(url)]);
    expect(zstdCodecInfo()).toEqual({ codec: 'zstd-napi', binding: { source: 'shipped', path: join(dir, 'ok', shippedName()) }, notLoaded: [] });
    const data = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(3 << 20, 'shipped ')]);
    expect((await roundTrip(data)).equals(data)).toBe(true);
  });

  it("one that does not load leaves zstd to Node's zlib (or none), with the reason kept", () => {
    searchZstdBinding([() => shipped(shippedFolder('bad', Buffer.from('garbage, not ELF')))]);
    expect(zstdCodecs()).toEqual(nodeHasZstd ? ['node-zlib'] : []);
    const info = zstdCodecInfo();
    expect(info.codec).toBe(nodeHasZstd ? 'node-zlib' : undefined);
    expect(info.binding).toBeUndefined();
    expect(info.notLoaded).toHaveLength(1);
    expect(info.notLoaded[0]).toContain(`${join(dir, 'bad', shippedName())} did not load: `);
    // on a Node without zstd the refusal names the file that did not load
    const refusal = (() => {
      try {
        return zstdCodec();
      } catch (e) {
        return (e as Error).message;
      }
    })();
    expect(refusal).toEqual(nodeHasZstd ? 'node-zlib' : expect.stringContaining(`zstd-napi's binary did not load: ${info.notLoaded[0]}`));
  });

  it('a file that loads but is not zstd-napi counts as not loaded', () => {
    searchZstdBinding([() => ({ binding: { something: 'else' }, source: 'shipped', path: '/elsewhere.node' })]);
    expect(zstdCodecInfo().notLoaded).toEqual(["/elsewhere.node loaded but is not zstd-napi's binding"]);
    expect(zstdCodecs()).not.toContain('zstd-napi');
  });

  it('by default, in this tree, zstd-napi installed beside tarport (a dev dependency) serves', () => {
    searchZstdBinding(undefined);
    expect(zstdCodecInfo()).toEqual({ codec: 'zstd-napi', binding: { source: 'installed', path: join(ROOT, 'node_modules/zstd-napi/binding.js') }, notLoaded: [] });
  });
});
