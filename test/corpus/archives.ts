import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { gzipSync } from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { dockerSave, header, ociLayout, pax, sha, tarBytes, type Item } from './tarwriter.js';

// The hostile archive corpus: each case is named after what it does, written into a folder at test
// time (nothing big is committed), and must be refused by `tarport push` with exit 2, a message that
// names the archive and the fault, nothing published, in bounded memory and time.

export interface ArchiveCase {
  /** File name: what the archive does. */
  readonly name: string;
  /** What the refusal must say. */
  readonly fault: RegExp;
  /** Writes the archive into `dir`; returns its path. */
  readonly make: (dir: string) => Promise<string>;
}

const MiB = 1 << 20;

/** A docker save archive with `extra` items before manifest.json (where docker writes it, last). */
function saveWith(extra: Item[], change?: (items: Item[]) => Item[]): Buffer {
  const img = dockerSave();
  const items = [...img.items.slice(0, -1), ...extra, img.items.at(-1)!];
  return tarBytes(change ? change(items) : items);
}

const write = (name: string, bytes: () => Buffer | Promise<Buffer>) => async (dir: string) => {
  const p = join(dir, name);
  await writeFile(p, await bytes());
  return p;
};

/** The manifest of the corpus image, edited. */
function withManifest(edit: (m: { Config: string; RepoTags: string[]; Layers: string[] }[]) => void): Buffer {
  const img = dockerSave();
  const m = JSON.parse(img.items.at(-1)!.data!.toString());
  edit(m);
  return tarBytes([...img.items.slice(0, -1), { name: 'manifest.json', data: Buffer.from(JSON.stringify(m)) }]);
}

/** Hard links: layer 0 of the manifest reached through `n` links, each to the one before. */
function hardlinkChain(n: number, cycle: boolean): Buffer {
  const img = dockerSave();
  const links: Item[] = [];
  for (let i = 0; i < n; i++) links.push({ name: `link${i}`, type: '1', linkname: i === 0 ? (cycle ? `link${n - 1}` : img.layerPaths[0]!) : `link${i - 1}` });
  const m = JSON.parse(img.items.at(-1)!.data!.toString());
  m[0].Layers[0] = `link${n - 1}`;
  return tarBytes([...img.items.slice(0, -1), ...links, { name: 'manifest.json', data: Buffer.from(JSON.stringify(m)) }]);
}

/** A base-256 size field that says -1. */
const negativeBase256 = Buffer.alloc(12, 0xff);

/** Streams a docker save archive with `count` empty files before its manifest into `path`. */
async function manyEntries(path: string, count: number): Promise<void> {
  const img = dockerSave();
  const out = createWriteStream(path);
  const put = async (b: Buffer) => {
    if (!out.write(b)) await once(out, 'drain');
  };
  await put(tarBytes(img.items.slice(0, -1), false));
  const template = header({ name: 'junk/f0000000' });
  const batch = Buffer.alloc(512 * 4096);
  for (let i = 0; i < count; ) {
    let n = 0;
    for (; n < 4096 && i < count; n++, i++) {
      const h = batch.subarray(n * 512, n * 512 + 512);
      template.copy(h);
      h.write(`junk/f${i.toString().padStart(7, '0')}`, 0, 'latin1');
      h.write('        ', 148, 'latin1');
      let sum = 0;
      for (let j = 0; j < 512; j++) sum += h[j]!;
      h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
    }
    await put(Buffer.from(batch.subarray(0, n * 512)));
  }
  await put(tarBytes([img.items.at(-1)!]));
  out.end();
  await once(out, 'finish');
}

/** `size` zero bytes, gzip-compressed as concatenated members of 16 MiB each (gunzip reads them all). */
function gzipZeros(size: number): Buffer {
  const member = gzipSync(Buffer.alloc(16 * MiB), { level: 9 });
  return Buffer.concat(Array.from({ length: Math.ceil(size / (16 * MiB)) }, () => member));
}

/** `size` zero bytes as concatenated zstd frames of 64 MiB each. */
function zstdZeros(size: number): Buffer {
  const frame = zstdCompress(Buffer.alloc(64 * MiB));
  return Buffer.concat(Array.from({ length: Math.ceil(size / (64 * MiB)) }, () => frame));
}

/** A docker save archive with an entry `pad.bin` of `size` zeros (not named by the manifest), compressed. */
function bombInside(size: number, kind: 'gzip' | 'zstd'): Buffer {
  const img = dockerSave();
  const z = (b: Buffer) => (kind === 'gzip' ? gzipSync(b, { level: 9 }) : zstdCompress(b));
  const head = tarBytes([...img.items.slice(0, -1), { name: 'pad.bin', sizeField: Buffer.from(size.toString(8).padStart(11, '0') + '\0', 'latin1') }], false);
  const zeros = kind === 'gzip' ? gzipZeros(size) : zstdZeros(size);
  return Buffer.concat([z(head), zeros, z(tarBytes([img.items.at(-1)!]))]);
}

/** An OCI layout whose one gzip layer blob is `size` zeros compressed: tiny on disk, huge when read. */
function layerBomb(size: number): Buffer {
  const blob = gzipZeros(size);
  const h = createHash('sha256');
  const mib = Buffer.alloc(MiB);
  for (let i = 0; i < size / MiB; i++) h.update(mib);
  return tarBytes(ociLayout(blob, `sha256:${h.digest('hex')}`, 'application/vnd.oci.image.layer.v1.tar+gzip'));
}

const layerTar = tarBytes([{ name: 'x.txt', data: Buffer.from('x\n') }]);

export const archiveCases: readonly ArchiveCase[] = [
  // the cases of bad-input.test.ts, made without a daemon
  { name: 'not-a-tar.tar', fault: /not a tar archive/, make: write('not-a-tar.tar', () => Buffer.from('this is not a tar archive, just text\n'.repeat(100))) },
  { name: 'empty.tar', fault: /empty file/, make: write('empty.tar', () => Buffer.alloc(0)) },
  { name: 'truncated.tar', fault: /truncated/, make: write('truncated.tar', () => saveWith([]).subarray(0, 3000)) },
  { name: 'manifest-points-outside.tar', fault: /points outside the archive/, make: write('manifest-points-outside.tar', () => withManifest((m) => (m[0]!.Layers[0] = '../../../etc/passwd'))) },
  { name: 'manifest-points-at-missing-file.tar', fault: /not in the archive/, make: write('manifest-points-at-missing-file.tar', () => withManifest((m) => (m[0]!.Layers[1] = 'nope/layer.tar'))) },
  { name: 'layer-is-symlink-out-of-archive.tar', fault: /points outside the archive/, make: write('layer-is-symlink-out-of-archive.tar', () => saveWith([{ name: 'evil.tar', type: '2', linkname: '/etc/passwd' }], (items) => items.map((i) => (i.name === 'manifest.json' ? { ...i, data: Buffer.from(i.data!.toString().replace(/"[0-9a-f]{64}\/layer.tar"\]/, '"evil.tar"]')) } : i)))) },
  // names that leave the archive's root, named by no manifest: no tool writes them
  { name: 'entry-name-dotdot.tar', fault: /"\.\.\/\.\.\/x" has a '\.\.' component/, make: write('entry-name-dotdot.tar', () => saveWith([{ name: '../../x', data: Buffer.from('owned\n') }])) },
  { name: 'entry-name-absolute.tar', fault: /"\/tmp\/x" is an absolute path/, make: write('entry-name-absolute.tar', () => saveWith([{ name: '/tmp/x', data: Buffer.from('owned\n') }])) },
  { name: 'entry-beneath-symlinked-parent.tar', fault: /"evil\/x" lies beneath the symbolic link "evil"/, make: write('entry-beneath-symlinked-parent.tar', () => saveWith([{ name: 'evil', type: '2', linkname: '/tmp' }, { name: 'evil/x', data: Buffer.from('owned\n') }])) },
  { name: 'hardlink-target-outside.tar', fault: /hard link "h" -> "\.\.\/\.\.\/etc\/passwd"/, make: write('hardlink-target-outside.tar', () => saveWith([{ name: 'h', type: '1', linkname: '../../etc/passwd' }])) },
  { name: 'pax-path-dotdot.tar', fault: /"a\/\.\.\/\.\.\/x" has a '\.\.' component/, make: write('pax-path-dotdot.tar', () => saveWith([pax({ path: 'a/../../x' }), { name: 'innocent', data: Buffer.from('x') }])) },
  // sizes that lie
  { name: 'pax-negative-size.tar', fault: /pax size "-1000" is not a size/, make: write('pax-negative-size.tar', () => saveWith([pax({ size: '-1000' }), { name: 'neg', data: Buffer.alloc(0) }])) },
  { name: 'pax-huge-size.tar', fault: /pax size "99999999999999999999" is not a size/, make: write('pax-huge-size.tar', () => saveWith([pax({ size: '99999999999999999999' }), { name: 'huge', data: Buffer.alloc(0) }])) },
  { name: 'pax-size-past-the-end.tar', fault: /entry "far" needs 1000000000000 bytes/, make: write('pax-size-past-the-end.tar', () => saveWith([pax({ size: '1000000000000' }), { name: 'far', data: Buffer.alloc(0) }])) },
  { name: 'base256-negative-size.tar', fault: /negative number in a header field/, make: write('base256-negative-size.tar', () => saveWith([{ name: 'neg', sizeField: negativeBase256 }])) },
  // long-name abuse
  { name: 'gnu-longname-of-megabytes.tar', fault: /GNU long name of 4194304 bytes/, make: write('gnu-longname-of-megabytes.tar', () => saveWith([{ name: '././@LongLink', type: 'L', data: Buffer.alloc(4 * MiB, 'a') }, { name: 'short', data: Buffer.alloc(0) }])) },
  { name: 'gnu-longlink-of-megabytes.tar', fault: /GNU long link of 4194304 bytes/, make: write('gnu-longlink-of-megabytes.tar', () => saveWith([{ name: '././@LongLink', type: 'K', data: Buffer.alloc(4 * MiB, 'a') }, { name: 'short', type: '2', linkname: 'x' }])) },
  { name: 'gnu-longname-chain.tar', fault: /more than 16 extended headers in a row/, make: write('gnu-longname-chain.tar', () => saveWith([...Array.from({ length: 100 }, (): Item => ({ name: '././@LongLink', type: 'L', data: Buffer.alloc(60_000, 'b') })), { name: 'short', data: Buffer.alloc(0) }])) },
  { name: 'pax-header-of-megabytes.tar', fault: /pax header of \d+ bytes/, make: write('pax-header-of-megabytes.tar', () => saveWith([pax({ comment: 'c'.repeat(3 * MiB) }), { name: 'short', data: Buffer.alloc(0) }])) },
  { name: 'pax-path-of-megabytes.tar', fault: /a name or link of more than 65536 bytes/, make: write('pax-path-of-megabytes.tar', () => saveWith([pax({ path: 'p/'.repeat(400_000) }), { name: 'short', data: Buffer.alloc(0) }])) },
  // entries an image archive never holds
  { name: 'sparse-entry.tar', fault: /entry "sparse" is a sparse file/, make: write('sparse-entry.tar', () => saveWith([{ name: 'sparse', type: 'S', data: Buffer.alloc(512) }])) },
  { name: 'pax-sparse-entry.tar', fault: /entry "psparse" is a sparse file/, make: write('pax-sparse-entry.tar', () => saveWith([pax({ 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.realsize': '1048576' }), { name: 'psparse', data: Buffer.alloc(512) }])) },
  { name: 'device-file.tar', fault: /entry "dev\/sda" is a device/, make: write('device-file.tar', () => saveWith([{ name: 'dev/sda', type: '4' }])) },
  { name: 'fifo.tar', fault: /entry "pipe" is a fifo/, make: write('fifo.tar', () => saveWith([{ name: 'pipe', type: '6' }])) },
  { name: 'duplicate-manifest.tar', fault: /two entries are named "manifest\.json"/, make: write('duplicate-manifest.tar', () => saveWith([], (items) => [...items, { name: 'manifest.json', data: Buffer.from('[]') }])) },
  { name: 'duplicate-layer.tar', fault: /two entries are named "[0-9a-f]{64}\/layer\.tar"/, make: write('duplicate-layer.tar', () => saveWith([], (items) => [...items.slice(0, -1), { name: dockerSave().layerPaths[0]!, data: layerTar }, items.at(-1)!])) },
  { name: 'duplicate-layer.tar.gz', fault: /two entries are named "[0-9a-f]{64}\/layer\.tar"/, make: write('duplicate-layer.tar.gz', () => gzipSync(saveWith([], (items) => [...items.slice(0, -1), { name: dockerSave().layerPaths[0]!, data: layerTar }, items.at(-1)!]))) },
  { name: 'hardlink-chain.tar', fault: /too many links/, make: write('hardlink-chain.tar', () => hardlinkChain(40, false)) },
  { name: 'hardlink-cycle.tar', fault: /too many links/, make: write('hardlink-cycle.tar', () => hardlinkChain(3, true)) },
  // size and expansion
  {
    name: 'million-tiny-entries.tar',
    fault: /more than 65536 entries/,
    make: async (dir) => {
      const p = join(dir, 'million-tiny-entries.tar');
      await manyEntries(p, 1_000_000);
      return p;
    },
  },
  { name: 'gzip-bomb-after-the-end.tar.gz', fault: /bytes follow the tar end-of-archive marker inside the gzip stream/, make: write('gzip-bomb-after-the-end.tar.gz', () => Buffer.concat([gzipSync(saveWith([])), gzipZeros(4096 * MiB)])) },
  { name: 'gzip-bomb-inside.tar.gz', fault: /decompresses to more than 200 times its size/, make: write('gzip-bomb-inside.tar.gz', () => bombInside(8192 * MiB, 'gzip')) },
  { name: 'zstd-bomb-inside.tar.zst', fault: /decompresses to more than 200 times its size/, make: write('zstd-bomb-inside.tar.zst', () => bombInside(64 * 1024 * MiB, 'zstd')) },
  { name: 'oci-layer-declared-tiny-is-huge.tar', fault: /the descriptor declares 100 bytes, but blobs\/sha256\/[0-9a-f]{64} holds/, make: write('oci-layer-declared-tiny-is-huge.tar', () => tarBytes(ociLayout(Buffer.alloc(3 * MiB, 1), `sha256:${sha(Buffer.alloc(3 * MiB, 1))}`, 'application/vnd.oci.image.layer.v1.tar', 100))) },
  { name: 'oci-layer-gzip-bomb.tar', fault: /decompresses to more than 200 times its size/, make: write('oci-layer-gzip-bomb.tar', () => layerBomb(2048 * MiB)) },
];
