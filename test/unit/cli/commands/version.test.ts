import { describe, expect, it } from 'vitest';
import { versionLines, type VersionDocument } from '../../../../src/cli/commands/version.js';

// `tarport version`: the version alone on the first line (as --version prints it), then the Node and
// where zstd comes from, and each binary that did not load with why.
const base: VersionDocument = { version: '9.8.7', node: '24.1.0', platform: 'linux-x64', executable: false, zstd: { codec: 'zstd-napi', binding: { source: 'shipped', path: '/p/native/zstd-napi-linux-x64.node' }, notLoaded: [] } };

describe('tarport version', () => {
  it('names the version, the Node, and the zstd-napi binary in use', () => {
    expect(versionLines(base)).toEqual(['9.8.7', 'node 24.1.0 linux-x64', 'zstd: zstd-napi, the binary the package carries (/p/native/zstd-napi-linux-x64.node)']);
    expect(versionLines({ ...base, executable: true, zstd: { codec: 'zstd-napi', binding: { source: 'executable', path: '/c/zstd-napi-ab.node' }, notLoaded: [] } }).slice(1)).toEqual([
      'node 24.1.0 linux-x64, inside the single executable',
      'zstd: zstd-napi, the binary the executable carries (/c/zstd-napi-ab.node)',
    ]);
  });

  it("says why a binary did not load, and what serves instead: Node's zlib, or nothing (gzip layers)", () => {
    const zlib = versionLines({ ...base, zstd: { codec: 'node-zlib', notLoaded: ['/p/x.node did not load: wrong ELF class'] } });
    expect(zlib.slice(2)).toEqual(["zstd: Node's own zlib", 'zstd-napi not loaded: /p/x.node did not load: wrong ELF class']);
    expect(versionLines({ ...base, node: '20.19.0', zstd: { codec: undefined, notLoaded: [] } })[2]).toBe('zstd: none (Node < 22.15 and no zstd-napi binary: a push stores gzip layers)');
  });
});
