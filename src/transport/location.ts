import { isAbsolute, resolve } from 'node:path';
import { TarportError } from '../errors.js';

/** A parsed repository location. Parsed once at the edge, immutable after. */
interface Remote {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly path: string;
}

export type Location =
  | { readonly kind: 'file'; readonly path: string }
  | (Remote & { readonly kind: 'ftp' | 'ftps' })
  | (Remote & { readonly kind: 'sftp' });

const DEFAULT_PORTS = { ftp: 21, ftps: 21, sftp: 22 } as const;

/**
 * Parses a repository URL (CLI.md "Repository URLs"). A plain path is a local directory. Passwords in
 * URLs are refused: they would end up in shell history, process lists and logs.
 */
export function parseLocation(input: string): Location {
  if (input.trim() === '') throw new TarportError('USAGE', 'empty repository location');
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(input);
  if (!m) {
    if (/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(input) && !isAbsolute(input) && !input.startsWith('./')) {
      // "ftp:host/path" and the like are typos, not relative paths
      const scheme = input.slice(0, input.indexOf(':'));
      if (['ftp', 'ftps', 'sftp', 'file'].includes(scheme.toLowerCase())) {
        throw new TarportError('USAGE', `repository location ${JSON.stringify(input)}: write ${scheme}://…`);
      }
    }
    return { kind: 'file', path: resolve(input) };
  }
  const scheme = m[1]!.toLowerCase();
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new TarportError('USAGE', `repository location ${JSON.stringify(maskLocationString(input))} is not a valid URL`);
  }
  if (scheme === 'file') {
    if (url.host !== '' && url.host !== 'localhost') {
      throw new TarportError('USAGE', `repository location ${input}: file:// URLs take an absolute path (file:///path)`);
    }
    return { kind: 'file', path: decodeURIComponent(url.pathname) };
  }
  if (scheme !== 'ftp' && scheme !== 'ftps' && scheme !== 'sftp') {
    throw new TarportError('USAGE', `repository location ${maskLocationString(input)}: unknown scheme ${scheme}:// (use a path, file://, ftp://, ftps:// or sftp://)`);
  }
  if (url.password !== '') {
    throw new TarportError('USAGE', `repository location ${maskLocationString(input)}: a password does not belong in the URL; use TARPORT_PASSWORD or --password-file`);
  }
  if (url.hostname === '') throw new TarportError('USAGE', `repository location ${input}: no host`);
  const user = decodeURIComponent(url.username) || (scheme === 'sftp' ? process.env.USER ?? 'root' : 'anonymous');
  const port = url.port ? Number(url.port) : DEFAULT_PORTS[scheme];
  const path = decodeURIComponent(url.pathname) || '/';
  return { kind: scheme, host: url.hostname, port, user, path };
}

/** The location as a URL that is safe to print. */
export function formatLocation(loc: Location): string {
  if (loc.kind === 'file') return loc.path;
  return `${loc.kind}://${encodeURIComponent(loc.user)}@${loc.host}:${loc.port}${loc.path}`;
}

/** Removes any password from a URL-like string before it is printed. */
export function maskLocationString(s: string): string {
  // up to the last '@': a password may hold '/' and '@' itself (masking part of a path is harmless)
  return s.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^:@/]*):.*@/, '$1:***@');
}
