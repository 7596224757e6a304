import { isSea } from 'node:sea';
import { zstdCodecInfo, type ZstdCodecInfo } from '../../archive/index.js';
import { VERSION } from '../../version.js';
import type { Context } from '../context.js';

export interface VersionDocument {
  version: string;
  node: string;
  platform: string;
  /** Running as the single executable (scripts/build-sea). */
  executable: boolean;
  zstd: ZstdCodecInfo;
}

const FROM = { installed: 'installed beside tarport', shipped: 'the binary the package carries', executable: 'the binary the executable carries' } as const;

/**
 * `tarport version`: what `--version` prints (its first line), then the Node it runs on and where zstd
 * comes from, so a user (and a test) sees whether the fast codec loaded on this host and, if not, why.
 */
export async function versionCommand(ctx: Context): Promise<number> {
  const doc: VersionDocument = {
    version: VERSION,
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
    executable: isSea(),
    zstd: zstdCodecInfo(),
  };
  ctx.out.data(versionLines(doc).join('\n'));
  ctx.out.document(doc);
  return 0;
}

export function versionLines(d: VersionDocument): string[] {
  const z = d.zstd;
  const codec = !z.codec
    ? 'zstd: none (Node < 22.15 and no zstd-napi binary: a push stores gzip layers)'
    : z.codec === 'zstd-napi' && z.binding
      ? `zstd: zstd-napi, ${FROM[z.binding.source]} (${z.binding.path})`
      : `zstd: ${z.codec === 'node-zlib' ? "Node's own zlib" : z.codec}`;
  return [
    d.version,
    `node ${d.node} ${d.platform}${d.executable ? ', inside the single executable' : ''}`,
    codec,
    ...z.notLoaded.map((r) => `zstd-napi not loaded: ${r}`),
  ];
}
