import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { TarportError } from '../errors.js';

/** OpenSSH's fingerprint of a host key: SHA256:<base64, no padding>. */
export function fingerprint(key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '');
}

/** The name a host has in known_hosts: "host" on port 22, "[host]:port" otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function matches(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
  }
  // OpenSSH compares host patterns without regard to case (match_pattern_list with dolower)
  const re = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 'i');
  return re.test(name);
}

export type HostKeyVerdict = { ok: true } | { ok: false; reason: 'unknown' | 'changed'; offered: string; known: string[] };

/** The key type named inside an SSH public key blob (its first string, e.g. "ssh-ed25519"). */
function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const n = blob.readUInt32BE(0);
  return n > 0 && n <= 64 && blob.length >= 4 + n ? blob.subarray(4, 4 + n).toString('latin1') : undefined;
}

/**
 * Checks a server's host key against a known_hosts file: the key must be listed for this host
 * (plain or hashed names, [host]:port for other ports); negated patterns and @revoked are honoured.
 * As in OpenSSH, a key counts as changed only when a key of the same type is listed for the host;
 * a host known by keys of other types only is unknown for this one.
 */
export function checkHostKey(file: string, host: string, port: number, key: Buffer): HostKeyVerdict {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new TarportError('CONFIG', `known hosts file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (e as Error).message}; give one with --known-hosts`);
  }
  const name = knownHostsName(host, port);
  const offered = key.toString('base64');
  const offeredType = blobType(key);
  const known: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    let parts = line.split(/\s+/);
    let marker = '';
    if (parts[0]!.startsWith('@')) {
      marker = parts[0]!;
      parts = parts.slice(1);
    }
    const [hosts, , b64] = parts;
    if (!hosts || !b64) continue;
    const pats = hosts.split(',');
    if (pats.some((p) => p.startsWith('!') && matches(p.slice(1), name))) continue;
    if (!pats.some((p) => !p.startsWith('!') && matches(p, name))) continue;
    if (marker === '@revoked') {
      if (b64 === offered) return { ok: false, reason: 'changed', offered: fingerprint(key), known: ['(this key is revoked)'] };
      continue;
    }
    if (marker === '@cert-authority') continue;
    if (b64 === offered) return { ok: true };
    const listed = Buffer.from(b64, 'base64');
    if (blobType(listed) === offeredType) known.push(fingerprint(listed));
  }
  return { ok: false, reason: known.length > 0 ? 'changed' : 'unknown', offered: fingerprint(key), known };
}
