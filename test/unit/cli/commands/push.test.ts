import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { SMALL, tarportInProcess, tempDir } from '../../../helpers.js';
import { tarBytes } from '../../../corpus/tarwriter.js';

// a Node with no zstd at all: Node 20's zlib has none, and the optional zstd-napi is not installed
const codecs = vi.hoisted(() => ({ none: false }));
vi.mock('../../../../src/archive/index.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../../../src/archive/index.js')>();
  return { ...real, zstdCodecs: () => (codecs.none ? [] : real.zstdCodecs()) };
});
const { compressionOf } = await import('../../../../src/cli/commands/push.js');
const { searchZstdBinding } = await import('../../../../src/archive/compression.js');
const { writeDemoArchives } = await import('../../../../src/archive/index.js');
const { shipped, shippedName } = await import('../../../../src/archive/zstdnative.js');
const nodeHasZstd = Number(process.versions.node.split('.')[0]) >= 24 || /^(22\.(1[5-9]|[2-9]\d)|23\.([89]|\d\d))\./.test(process.versions.node);

describe('the layer compression of push and watch', () => {
  it('is zstd by default where this Node has a zstd codec, without a warning', () => {
    codecs.none = false;
    const warn = vi.fn();
    expect(compressionOf(undefined, warn)).toBe('zstd');
    expect(warn).not.toHaveBeenCalled();
  });

  it('falls back to gzip with a warning that says why, where there is no zstd codec', () => {
    codecs.none = true;
    const warn = vi.fn();
    expect(compressionOf(undefined, warn)).toBe('gzip');
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toMatch(new RegExp(`zstd is not available in Node ${process.versions.node.replace(/\./g, '\\.')} .*gzip-compressed instead`));
  });

  it('keeps an explicit choice, zstd included, where there is no zstd codec (the push then stops with exit 2)', () => {
    codecs.none = true;
    const warn = vi.fn();
    expect(compressionOf('zstd', warn)).toBe('zstd');
    expect(compressionOf('gzip', warn)).toBe('gzip');
    expect(compressionOf('none', warn)).toBe('none');
    expect(warn).not.toHaveBeenCalled();
    expect(() => compressionOf('lz4', warn)).toThrow(/--compress "lz4": use zstd, gzip or none/);
  });

  it("where the shipped zstd-napi binary does not load: zstd from Node's zlib, else gzip with a warning naming the file", async () => {
    codecs.none = false;
    const dir = await tempDir('tarport-push-native-');
    await writeFile(join(dir, shippedName()), 'not a binary');
    searchZstdBinding([() => shipped(pathToFileURL(dir + '/'))]);
    try {
      const warn = vi.fn();
      expect(compressionOf(undefined, warn)).toBe(nodeHasZstd ? 'zstd' : 'gzip');
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual(
        nodeHasZstd ? [] : [expect.stringContaining(`(zstd-napi's binary did not load: ${join(dir, shippedName())} did not load: `)],
      );
    } finally {
      searchZstdBinding(undefined);
    }
  });
});

describe('push of a name that is no archive file', () => {
  it.each([
    ['a file that is not there', (dir: string) => join(dir, 'app.tar'), (p: string) => `${p}: no such file`],
    ['a directory', (dir: string) => dir, (p: string) => `${p}: a directory, not an archive (docker save -o FILE, or pipe it into push -)`],
    [
      "an OCI layout directory (skopeo's oci:DIR)",
      async (dir: string) => {
        await mkdir(join(dir, "it's oci"));
        await writeFile(join(dir, "it's oci", 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
        return join(dir, "it's oci");
      },
      (p: string) => `${p}: an OCI layout directory, not an archive: push it as a tar of its contents (tar -C '${p.replace(/'/g, "'\\''")}' -cf - . | tarport push - --to URL)`,
    ],
  ])('%s is bad input (exit 2), named, and the others are still pushed', async (_what, path, message) => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const bad = await path(await tempDir());
    const repo = join(dir, 'repo');
    const r = await tarportInProcess(['push', '--init', bad, v1!, '--to', repo, '--json']);
    expect(r.code).toBe(2);
    const doc = JSON.parse(r.stdout) as { pushed: unknown[]; failed: { archive: string; error: { code: string; message: string } }[] };
    expect(doc.failed).toEqual([{ archive: bad, error: { code: 'BAD_INPUT', message: message(bad) } }]);
    expect(doc.pushed).toHaveLength(1);
  });
});

describe('push --kind', () => {
  it('rootfs publishes a docker export that holds a /manifest.json of its own (auto refuses it, exit 2); a kind that is none is a usage error (exit 2) before anything is read', async () => {
    const dir = await tempDir();
    const archive = join(dir, 'export.tar');
    await writeFile(archive, tarBytes([{ name: 'manifest.json', data: Buffer.from('{"name":"my web app"}') }, { name: 'etc/hostname', data: Buffer.from('box\n') }]));
    const repo = join(dir, 'repo');
    const auto = await tarportInProcess(['push', '--init', archive, '--name', 'box/web:1', '--to', repo]);
    expect(auto.code).toBe(2);
    const r = await tarportInProcess(['push', '--init', archive, '--name', 'box/web:1', '--kind', 'rootfs', '--to', repo, '--json']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { pushed: { releases: { kind: string; status: string }[] }[] }).pushed[0]!.releases.map((x) => [x.kind, x.status])).toEqual([['rootfs', 'published']]);
    const bad = await tarportInProcess(['push', archive, '--kind', 'docker', '--to', repo]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--kind "docker": use auto, image or rootfs');
  });
});

describe('--max-expansion', () => {
  it('is 200 unless given; takes a whole number of times, 0 for no limit; anything else is a usage error naming the value', async () => {
    const { maxExpansionOf } = await import('../../../../src/cli/commands/push.js');
    expect([maxExpansionOf(undefined), maxExpansionOf('0'), maxExpansionOf(' 1000 ')]).toEqual([200, 0, 1000]);
    for (const bad of ['-1', '1.5', 'lots', '', '1e3']) {
      expect(() => maxExpansionOf(bad)).toThrow(expect.objectContaining({ code: 'USAGE', message: `--max-expansion ${JSON.stringify(bad)}: a whole number of times (default 200), or 0 for no limit` }));
    }
  });
});
