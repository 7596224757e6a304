import { TarportError } from '../errors.js';

// Docker's reference grammar (distribution/reference), without digests.
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]+)?|\\[[0-9a-fA-F:]+\\](?::[0-9]+)?)`;
export const NAME_RE = new RegExp(`^(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
export const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export interface ImageRef {
  readonly name: string;
  readonly tag: string;
}

/**
 * Checks a name against Docker's reference grammar and returns its familiar form (see
 * familiarName): every name that enters tarport (push, archive tags, subscriptions) goes through
 * here, so `docker.io/library/x`, `index.docker.io/library/x`, `library/x` and `x` are one name.
 */
export function validateName(name: string, what = 'image name'): string {
  if (name.length > 255 || !NAME_RE.test(name)) {
    throw new TarportError('BAD_INPUT', `invalid ${what} ${JSON.stringify(name)}: use lowercase letters, digits and . _ - separated by /, optionally after a registry host (host:port/)`);
  }
  return familiarName(name);
}

const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';

/** Splits a name into its registry host (Docker's rule: a first segment with . or : or = localhost) and path. */
function splitDomain(name: string): { domain: string; path: string } {
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  if (slash < 0 || (!first.includes('.') && !first.includes(':') && first !== 'localhost' && first.toLowerCase() === first)) {
    return { domain: DEFAULT_DOMAIN, path: name };
  }
  const domain = first === LEGACY_DEFAULT_DOMAIN ? DEFAULT_DOMAIN : first;
  return { domain, path: name.slice(slash + 1) };
}

/**
 * Docker's familiar form of a name (distribution/reference FamiliarName): Docker Hub's host and the
 * `library/` of official images dropped. This is the form the repository stores and shows, the one
 * `docker save` writes and `docker images` prints: `x`, `a/b`, `registry.example:5000/a/b`.
 */
export function familiarName(name: string): string {
  const { domain, path } = splitDomain(name);
  if (domain !== DEFAULT_DOMAIN) return name;
  return path.startsWith(OFFICIAL_REPO_PREFIX) && !path.slice(OFFICIAL_REPO_PREFIX.length).includes('/') ? path.slice(OFFICIAL_REPO_PREFIX.length) : path;
}

/**
 * Docker's fully qualified form of a name (ParseNormalizedNamed): `docker.io/library/x`,
 * `docker.io/a/b`, other registries as they are. containerd (kubelet, k3s, RKE2) and Podman
 * store names in this form.
 */
export function qualifiedName(name: string): string {
  const { domain, path } = splitDomain(name);
  if (domain !== DEFAULT_DOMAIN) return name;
  return `${DEFAULT_DOMAIN}/${path.includes('/') ? path : OFFICIAL_REPO_PREFIX + path}`;
}

/** True when two names are one image name under Docker's rules. */
export function sameName(a: string, b: string): boolean {
  return familiarName(a) === familiarName(b);
}

export function validateTag(tag: string, what = 'tag'): string {
  if (!TAG_RE.test(tag)) {
    throw new TarportError('BAD_INPUT', `invalid ${what} ${JSON.stringify(tag)}: up to 128 letters, digits, _ . -, not starting with . or -`);
  }
  return tag;
}

/** Parses "name[:tag]" (tag defaults to "latest" when `defaultTag` is set). */
export function parseRef(ref: string, opts: { defaultTag?: string; what?: string } = {}): ImageRef {
  const what = opts.what ?? 'image reference';
  if (ref.includes('@')) throw new TarportError('BAD_INPUT', `invalid ${what} ${JSON.stringify(ref)}: digests are not supported, give NAME:TAG`);
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  let name = ref;
  let tag = opts.defaultTag;
  if (colon > slash) {
    name = ref.slice(0, colon);
    tag = ref.slice(colon + 1);
  }
  if (tag === undefined) throw new TarportError('BAD_INPUT', `invalid ${what} ${JSON.stringify(ref)}: give NAME:TAG`);
  const out = { name: validateName(name, `image name in ${JSON.stringify(ref)}`), tag: validateTag(tag, `tag in ${JSON.stringify(ref)}`) };
  const tooLong = unstorableSegment(out);
  if (tooLong) throw new TarportError('BAD_INPUT', `invalid ${what} ${JSON.stringify(ref)}: ${tooLong}`);
  return out;
}

/** The longest folder name a file system takes (ext4: 255 bytes; FAT32, exFAT, NTFS: 255 characters). */
export const MAX_SEGMENT = 255;

/**
 * Why a release's name or tag cannot be a folder of the repository (encodeSegment makes an
 * uppercase letter, '/' and ':' three characters each), or undefined when both can.
 */
export function unstorableSegment(ref: ImageRef): string | undefined {
  for (const [what, s] of [['name', ref.name], ['tag', ref.tag]] as const) {
    const n = encodeSegment(s).length;
    if (n > MAX_SEGMENT) return `its ${what} is ${n} characters as a folder name (an uppercase letter, '/' or ':' takes three), more than the ${MAX_SEGMENT} a file system allows`;
  }
  return undefined;
}

export function formatRef(r: ImageRef): string {
  return `${r.name}:${r.tag}`;
}

const SAFE = /[a-z0-9._-]/;
const RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])$/i;

/**
 * One reversible encoding for every name that becomes a file or folder name: valid on FAT32, exFAT
 * and NTFS and the same on case-insensitive file systems. Everything but [a-z0-9._-] becomes %XX
 * (uppercase letters too, so "V1" and "v1" never collide), as do a leading or trailing dot and the
 * first letter of a Windows device name (con, nul, com1, …).
 */
export function encodeSegment(s: string): string {
  if (s === '') throw new TarportError('INTERNAL', 'internal error: empty name segment');
  let out = '';
  for (const ch of s) {
    if (SAFE.test(ch)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  if (out.startsWith('.')) out = '%2E' + out.slice(1);
  if (out.endsWith('.')) out = out.slice(0, -1) + '%2E';
  const base = out.split('.')[0]!;
  if (RESERVED.test(base)) out = '%' + out.charCodeAt(0).toString(16).toUpperCase() + out.slice(1);
  return out;
}

export function decodeSegment(s: string): string {
  if (!/^(?:[a-z0-9._-]|%[0-9A-F]{2})+$/.test(s)) throw new TarportError('INTEGRITY', `not an encoded name: ${JSON.stringify(s)}`);
  try {
    return decodeURIComponent(s);
  } catch {
    // %-escapes that are not UTF-8 (%FF): no tarport wrote this name
    throw new TarportError('INTEGRITY', `not an encoded name: ${JSON.stringify(s)} (its %-escapes are not UTF-8)`);
  }
}

/** True when a file name is valid on FAT32/exFAT and NTFS. Used by tests and by `check`. */
export function isPortableFileName(s: string): boolean {
  if (s === '' || s.length > 255) return false;
  if (/[\x00-\x1f:\\*?"<>|/]/.test(s)) return false;
  if (s.endsWith('.') || s.endsWith(' ')) return false;
  return !RESERVED.test(s.split('.')[0]!);
}
