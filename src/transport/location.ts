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
  | (Remote & { readonly kind: 'sftp' })
  | (Remote & { readonly kind: 'http' | 'https' })
  | { readonly kind: 's3'; readonly bucket: string; readonly prefix: string };

const DEFAULT_PORTS = { ftp: 21, ftps: 21, sftp: 22, http: 80, https: 443 } as const;
const SCHEMES = ['ftp', 'ftps', 'sftp', 'http', 'https'] as const;
/** S3's rules for bucket names: 3 to 63 lower-case letters, digits, dots and hyphens. */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
type Scheme = (typeof SCHEMES)[number];

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
      if ([...SCHEMES, 'file', 's3'].includes(scheme.toLowerCase())) {
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
  const shown = maskLocationString(input);
  if (scheme === 'file') {
    if (url.host !== '' && url.host !== 'localhost') {
      throw new TarportError('USAGE', `repository location ${shown}: file:// URLs take an absolute path (file:///path)`);
    }
    return { kind: 'file', path: decoded(url.pathname, 'path', shown) };
  }
  if (scheme === 's3') return parseS3(url, shown);
  if (!(SCHEMES as readonly string[]).includes(scheme)) {
    throw new TarportError('USAGE', `repository location ${maskLocationString(input)}: unknown scheme ${scheme}:// (use a path, file://, ftp://, ftps://, sftp://, http://, https:// or s3://)`);
  }
  const kind = scheme as Scheme;
  if (url.password !== '') {
    throw new TarportError('USAGE', `repository location ${maskLocationString(input)}: a password does not belong in the URL; use TARPORT_PASSWORD or --password-file`);
  }
  // ftp and ftps are "special" URL schemes: new URL('ftp:///srv/repo') skips the empty host and
  // takes "srv" for one, so an empty authority is caught on the text itself
  if (url.hostname === '' || /^[^:]+:\/\/\//.test(input)) throw new TarportError('USAGE', `repository location ${shown}: no host (write ${scheme}://HOST/PATH)`);
  if (url.port === '0') throw new TarportError('USAGE', `repository location ${shown}: port 0 is not a port a server listens on`);
  // http(s) sends no user unless one is named; FTP logs in as anonymous, SFTP as the local user
  const user = decoded(url.username, 'user name', shown) || (kind === 'sftp' ? process.env.USER ?? 'root' : kind === 'http' || kind === 'https' ? '' : 'anonymous');
  const port = url.port ? Number(url.port) : DEFAULT_PORTS[kind];
  const path = decoded(url.pathname, 'path', shown) || '/';
  // an IPv6 address keeps its brackets in url.hostname; sockets and known_hosts want it bare
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { kind, host, port, user, path };
}

/**
 * s3://BUCKET/PREFIX: the endpoint, region and credentials are not part of it (--s3-endpoint,
 * --s3-region, the AWS chain), so a user, password or port in it is a mistake.
 */
function parseS3(url: URL, shown: string): Location {
  if (url.username !== '' || url.password !== '') {
    throw new TarportError('USAGE', `repository location ${shown}: an s3:// location names no user or password; credentials come from the AWS chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE)`);
  }
  if (url.port !== '') throw new TarportError('USAGE', `repository location ${shown}: an s3:// location names no port; give the server with --s3-endpoint http(s)://HOST:PORT`);
  if (!BUCKET.test(url.hostname) || url.hostname.includes('..')) {
    throw new TarportError('USAGE', `repository location ${shown}: ${JSON.stringify(url.hostname)} is no valid bucket name (3-63 lower-case letters, digits, dots and hyphens; write s3://BUCKET/PREFIX)`);
  }
  if (url.search !== '' || url.hash !== '') throw new TarportError('USAGE', `repository location ${shown}: no ?query or #fragment in an s3:// location`);
  const prefix = decoded(url.pathname, 'path', shown).replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((s) => s === '.' || s === '..' || (s === '' && prefix !== ''))) {
    throw new TarportError('USAGE', `repository location ${shown}: the prefix ${JSON.stringify(prefix)} has an empty, "." or ".." segment`);
  }
  return { kind: 's3', bucket: url.hostname, prefix };
}

/** %-decodes one part of a URL; a bad escape is the user's input, named, not an internal error. */
function decoded(part: string, what: string, shown: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    // a % without two hex digits, else the first escape (its bytes are then no UTF-8)
    const bad = /%(?![0-9a-fA-F]{2}).{0,2}/.exec(part)?.[0] ?? /%[0-9a-fA-F]{2}/.exec(part)?.[0] ?? part;
    throw new TarportError('USAGE', `repository location ${shown}: the ${what} ${JSON.stringify(part)} has a bad %-escape near ${JSON.stringify(bad)} (write %25 for a literal %)`);
  }
}

/** The location as a URL that is safe to print. */
export function formatLocation(loc: Location): string {
  if (loc.kind === 'file') return loc.path;
  if (loc.kind === 's3') return `s3://${loc.bucket}/${loc.prefix}`;
  const host = loc.host.includes(':') ? `[${loc.host}]` : loc.host;
  return `${loc.kind}://${loc.user ? `${encodeURIComponent(loc.user)}@` : ''}${host}:${loc.port}${loc.path}`;
}

/**
 * Removes the password from every URL in a text before it is printed. A password may hold "@" or
 * "/" (then the text is no valid URL): everything up to the last "@" before a blank is masked,
 * unless what follows the colon is a port ("ftp://host:21/path@2").
 */
export function maskLocationString(s: string): string {
  return s.replace(/(?<![a-zA-Z0-9+.-])([a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^:@/\s]*):(?!\d*(?:\/|$))\S*@/g, '$1:***@');
}
