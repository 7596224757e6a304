import { TarportError } from '../errors.js';
import { blobKey } from './layout.js';
import { MEDIA_TYPES, PlatformSchema, type Descriptor, type PlatformImage, type RecordPlatform, type ReleaseRecord } from './records.js';

/** `os/architecture[/variant]`, as Docker and `--platform` write it. */
export function formatRecordPlatform(p: RecordPlatform): string {
  return [p.os, p.architecture, ...(p.variant ? [p.variant] : [])].join('/');
}

/**
 * The platform an image config names (its os, architecture and variant: what the runtime files the
 * image under), or undefined when it names none that is a platform name (printed, acknowledged).
 */
export function configPlatform(config: unknown): RecordPlatform | undefined {
  const o = config as { os?: unknown; architecture?: unknown; variant?: unknown } | null;
  const variant = o?.variant === '' ? undefined : o?.variant;
  const r = PlatformSchema.safeParse({ os: o?.os, architecture: o?.architecture, ...(variant !== undefined ? { variant } : {}) });
  return r.success ? r.data : undefined;
}

/** Parses `os/arch[/variant]` (a `--platform` value or config key); throws USAGE naming the value. */
export function parsePlatform(value: string, what = '--platform'): RecordPlatform {
  const parts = value.split('/');
  const ok = parts.length >= 2 && parts.length <= 3 && parts.every((p) => /^[A-Za-z0-9_.-]{1,64}$/.test(p));
  if (!ok) throw new TarportError('USAGE', `${what} ${JSON.stringify(value)}: write os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8`);
  const [os, architecture, variant] = parts.map((p) => p.toLowerCase()) as [string, string, string?];
  return { os, architecture, ...(variant ? { variant } : {}) };
}

/** What a release carries, per member, for ls, the page and the registry files. */
export interface ReleaseMember {
  /** `linux/arm64/v8`; artifacts without one: `unknown/unknown`. */
  readonly platform: string;
  /** image: runnable, loaded when it is the consumer's platform; artifact: kept, never loaded; absent: listed without blobs. */
  readonly state: 'image' | 'artifact' | 'absent';
  /** For artifacts: BuildKit's reference type (`attestation-manifest`) or the artifact type. */
  readonly type?: string;
}

/**
 * The platforms and other members a release carries. A single-platform release records no platform
 * (its config names it, and reading it costs a request): it lists none here.
 */
export function recordMembers(record: ReleaseRecord): ReleaseMember[] {
  const ix = record.index;
  if (!ix) return [];
  const type = (a: { annotations?: Record<string, string>; artifactType?: string }) => a.annotations?.['vnd.docker.reference.type'] ?? a.artifactType;
  return [
    ...ix.platforms.map((p): ReleaseMember => ({ platform: formatRecordPlatform(p.platform), state: 'image' })),
    ...ix.artifacts.map((a): ReleaseMember => ({ platform: a.platform ? formatRecordPlatform(a.platform) : 'unknown/unknown', state: 'artifact', ...(type(a) ? { type: type(a)! } : {}) })),
    ...ix.absent.map((a): ReleaseMember => ({ platform: a.platform ? formatRecordPlatform(a.platform) : 'unknown/unknown', state: 'absent' })),
  ];
}

/** The runnable platforms of a release, formatted (empty for a single-platform release). */
export function recordPlatforms(record: ReleaseRecord): string[] {
  return (record.index?.platforms ?? []).map((p) => formatRecordPlatform(p.platform));
}

/** Every object a release references: what gc keeps, check checks and sync carries. */
export function recordObjects(record: ReleaseRecord): Descriptor[] {
  const out: Descriptor[] = [...record.layers, ...(record.config ? [record.config] : []), ...(record.manifest ? [record.manifest] : [])];
  for (const p of record.index?.platforms ?? []) out.push(...p.layers, p.config, ...(p.manifest ? [p.manifest] : []));
  for (const a of record.index?.artifacts ?? []) out.push(a.manifest, ...a.objects);
  return out;
}

/**
 * The release's top manifest in the repository's OCI view (what a registry serves for name:tag): an
 * image manifest, or (a multi-platform release) the image index tarport wrote. Undefined for
 * encrypted and rootfs releases. Its bytes are the object at `key` (read them with
 * Repository.readSmallBlob(descriptor, …), which checks the digest).
 */
export function recordTopManifest(record: ReleaseRecord): (Descriptor & { key: string }) | undefined {
  return record.manifest && !record.manifest.encryption ? { ...record.manifest, key: blobKey(record.manifest.digest) } : undefined;
}

export const isIndexRecord = (record: ReleaseRecord) => record.index !== undefined || record.manifest?.mediaType === MEDIA_TYPES.index;

/**
 * One spelling for each platform, as containerd's platforms.Normalize makes it: the architecture
 * names of kernels and distributions (aarch64, x86_64, armhf, i386) become GOARCH names, and a
 * variant that is the architecture's default is dropped (arm64 v8, amd64 v1) or, for arm, written
 * (v7). Two spellings of one platform are then equal: `linux/arm64/v8` is `linux/arm64`.
 */
export function normalizePlatform(p: RecordPlatform): RecordPlatform {
  const lower = p.os.toLowerCase();
  const os = lower === 'macos' ? 'darwin' : lower;
  const [architecture, variant] = normalizeArch(p.architecture.toLowerCase(), (p.variant ?? '').toLowerCase());
  return { os, architecture, ...(variant ? { variant } : {}) };
}

function normalizeArch(arch: string, variant: string): [string, string] {
  switch (arch) {
    case 'i386':
      return ['386', ''];
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return ['amd64', variant === 'v1' ? '' : variant];
    case 'aarch64':
    case 'arm64':
      return ['arm64', ['8', 'v8', 'v8.0'].includes(variant) ? '' : ['9', '9.0', 'v9.0'].includes(variant) ? 'v9' : variant];
    case 'armhf':
      return ['arm', 'v7'];
    case 'armel':
      return ['arm', 'v6'];
    case 'arm':
      return ['arm', variant === '' || variant === '7' ? 'v7' : ['5', '6', '8'].includes(variant) ? `v${variant}` : variant];
    default:
      return [arch, variant];
  }
}

/** Whether two platforms are one, however each is spelled (normalizePlatform). */
export function samePlatform(a: RecordPlatform, b: RecordPlatform): boolean {
  return formatRecordPlatform(normalizePlatform(a)) === formatRecordPlatform(normalizePlatform(b));
}

// the level of a variant the matcher orders (arm v5 < v6 < v7, amd64 v1 < v2 < v3); amd64 without one is v1
const level = (p: RecordPlatform) => {
  const v = p.variant ?? (p.architecture === 'amd64' ? 'v1' : '');
  return /^v\d+$/.test(v) ? Number(v.slice(1)) : undefined;
};

/**
 * How well an image built for `have` runs on `want`: undefined when it does not, else a score (higher
 * is better). An arm v7 host runs v6 and v5 images and an amd64 v3 host runs v2 and v1 ones, as
 * containerd's platform matcher allows; any other difference in variant does not run.
 */
export function platformScore(have: RecordPlatform, want: RecordPlatform): number | undefined {
  const h = normalizePlatform(have);
  const w = normalizePlatform(want);
  if (h.os !== w.os || h.architecture !== w.architecture) return undefined;
  if (h.variant === w.variant) return 1000;
  const hl = level(h);
  const wl = level(w);
  if ((w.architecture === 'arm' || w.architecture === 'amd64') && hl !== undefined && wl !== undefined && hl < wl) return hl;
  return undefined;
}

/** The platform of a multi-platform release that runs best on `want`, or undefined. */
export function pickPlatform(record: ReleaseRecord, want: RecordPlatform): PlatformImage | undefined {
  let best: { p: PlatformImage; score: number } | undefined;
  for (const p of record.index?.platforms ?? []) {
    const score = platformScore(p.platform, want);
    if (score !== undefined && (!best || score > best.score)) best = { p, score };
  }
  return best?.p;
}

/**
 * The record as the consumer loads it on `want`: a single-platform record as it is, a multi-platform
 * one narrowed to its best platform (config, layers and image ID of that platform only). A release
 * that lacks the platform is refused with PLATFORM (exit 2), naming what it has.
 */
export function platformView(record: ReleaseRecord, want: RecordPlatform): ReleaseRecord {
  if (!record.index) return record;
  const p = pickPlatform(record, want);
  if (!p) {
    const has = recordPlatforms(record).join(', ');
    const absent = record.index.absent.filter((a) => a.platform).map((a) => formatRecordPlatform(a.platform!));
    throw new TarportError(
      'PLATFORM',
      `${record.name}:${record.tag} v${record.version} has no image for ${formatRecordPlatform(want)}: it has ${has}${absent.length ? ` (listed without their blobs: ${absent.join(', ')})` : ''}; choose one with --platform, or publish an archive that holds ${formatRecordPlatform(want)}`,
    );
  }
  const { index: _index, manifest: _top, ...rest } = record;
  return { ...rest, contentKey: p.contentKey, config: p.config, layers: p.layers, ...(p.manifest ? { manifest: p.manifest } : {}) };
}
