import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { checkHostKey, fingerprint, knownHostsName } from '../../../src/transport/knownhosts.js';
import { tempDir } from '../../helpers.js';

// Two ed25519 host keys made by ssh-keygen; their fingerprints as `ssh-keygen -lf` prints them.
const K1 = 'AAAAC3NzaC1lZDI1NTE5AAAAIOxAce0DZ5D2BXTuzgxawNIgJuQZitYpFvEBkwQP3Uys';
const K1_FP = 'SHA256:mrt6PGye4B+MeqlaRXJCKqPkheHIT1ck0gD0HaKA0GU';
const K2 = 'AAAAC3NzaC1lZDI1NTE5AAAAIEBk8LFS80s9cLxXcntbdrvyJz7ar3ZmisF3ZwOhMgh9';
const K2_FP = 'SHA256:skAfMlzi21S0aTUOtOlHsOkjpc7qun8L3Cs9iUEiWVg';
// `ssh-keygen -H` of "[127.0.0.1]:2222 ssh-ed25519 K1" and "repo.example.org ssh-ed25519 K1"
const HASHED_PORT_2222 = `|1|j/EAC6SDQf5iv4PzwEvrC3iR1Ow=|9B28ON1vDIVzTCyck5Pb7F/cdZU= ssh-ed25519 ${K1}`;
const HASHED_REPO = `|1|NFzyT9nIn24BUbu/M+tFN2luYh4=|K2Fszc3VokY9zcK3/iUXMtKaSs4= ssh-ed25519 ${K1}`;

const key = (b64: string) => Buffer.from(b64, 'base64');

/** A public key blob of another type (only its type string matters to the check). */
function otherTypeKey(type: string): string {
  const name = Buffer.from(type);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(name.length);
  return Buffer.concat([len, name, Buffer.alloc(40, 7)]).toString('base64');
}

async function knownHosts(...lines: string[]): Promise<string> {
  const file = join(await tempDir(), 'known_hosts');
  await writeFile(file, lines.join('\n') + '\n');
  return file;
}

describe('knownHostsName and fingerprint', () => {
  it('names a host as OpenSSH does: bare on port 22, [host]:port otherwise', () => {
    expect(knownHostsName('repo.example.org', 22)).toBe('repo.example.org');
    expect(knownHostsName('127.0.0.1', 2222)).toBe('[127.0.0.1]:2222');
    expect(knownHostsName('::1', 2222)).toBe('[::1]:2222');
  });

  it('prints the fingerprint ssh-keygen -l prints', () => {
    expect(fingerprint(key(K1))).toBe(K1_FP);
    expect(fingerprint(key(K2))).toBe(K2_FP);
  });
});

describe('checkHostKey', () => {
  it('accepts a key listed under the plain name, on port 22 and as [host]:port', async () => {
    const file = await knownHosts('# a comment', '', `repo.example.org ssh-ed25519 ${K1} root@repo`, `[127.0.0.1]:2222 ssh-ed25519 ${K2}`);
    expect(checkHostKey(file, 'repo.example.org', 22, key(K1))).toEqual({ ok: true });
    expect(checkHostKey(file, '127.0.0.1', 2222, key(K2))).toEqual({ ok: true });
    // the port is part of the name: the same host on another port is unknown
    expect(checkHostKey(file, '127.0.0.1', 22, key(K2))).toMatchObject({ ok: false, reason: 'unknown' });
    expect(checkHostKey(file, 'repo.example.org', 2222, key(K1))).toMatchObject({ ok: false, reason: 'unknown' });
  });

  it('accepts hashed entries (ssh-keygen -H), including [host]:port, and only for their host', async () => {
    const file = await knownHosts(HASHED_PORT_2222, HASHED_REPO);
    expect(checkHostKey(file, '127.0.0.1', 2222, key(K1))).toEqual({ ok: true });
    expect(checkHostKey(file, 'repo.example.org', 22, key(K1))).toEqual({ ok: true });
    expect(checkHostKey(file, '127.0.0.1', 2223, key(K1))).toMatchObject({ ok: false, reason: 'unknown' });
    expect(checkHostKey(file, 'other.example.org', 22, key(K1))).toMatchObject({ ok: false, reason: 'unknown' });
  });

  it('tells an unknown host from a changed key, with both fingerprints', async () => {
    const file = await knownHosts(`repo.example.org ssh-ed25519 ${K1}`, HASHED_PORT_2222);
    expect(checkHostKey(file, 'new.example.org', 22, key(K2))).toEqual({ ok: false, reason: 'unknown', offered: K2_FP, known: [] });
    expect(checkHostKey(file, 'repo.example.org', 22, key(K2))).toEqual({ ok: false, reason: 'changed', offered: K2_FP, known: [K1_FP] });
    expect(checkHostKey(file, '127.0.0.1', 2222, key(K2))).toEqual({ ok: false, reason: 'changed', offered: K2_FP, known: [K1_FP] });
  });

  it('a host known only by keys of another type is unknown for this type, not changed (as OpenSSH)', async () => {
    const file = await knownHosts(`repo.example.org ssh-rsa ${otherTypeKey('ssh-rsa')}`);
    expect(checkHostKey(file, 'repo.example.org', 22, key(K1))).toEqual({ ok: false, reason: 'unknown', offered: K1_FP, known: [] });
  });

  it('matches patterns as OpenSSH does: lists, wildcards, negation, any case', async () => {
    const file = await knownHosts(`!bad.example.org,*.example.org,10.0.0.? ssh-ed25519 ${K1}`, `Mixed.Example.NET ssh-ed25519 ${K2}`);
    expect(checkHostKey(file, 'repo.example.org', 22, key(K1))).toEqual({ ok: true });
    expect(checkHostKey(file, '10.0.0.7', 22, key(K1))).toEqual({ ok: true });
    expect(checkHostKey(file, '10.0.0.17', 22, key(K1))).toMatchObject({ ok: false, reason: 'unknown' });
    // a negated pattern excludes the host from the whole line
    expect(checkHostKey(file, 'bad.example.org', 22, key(K1))).toMatchObject({ ok: false, reason: 'unknown' });
    // a dot in a pattern is a dot, not "any character"
    expect(checkHostKey(file, 'repoXexample.org', 22, key(K1))).toMatchObject({ ok: false, reason: 'unknown' });
    expect(checkHostKey(file, 'mixed.example.net', 22, key(K2))).toEqual({ ok: true });
  });

  it('refuses a revoked key even when it is also listed as valid; ignores @cert-authority lines', async () => {
    const file = await knownHosts(`@revoked * ssh-ed25519 ${K1}`, `repo.example.org ssh-ed25519 ${K1}`, `@cert-authority *.example.org ssh-ed25519 ${K2}`);
    expect(checkHostKey(file, 'repo.example.org', 22, key(K1))).toMatchObject({ ok: false, reason: 'changed', known: ['(this key is revoked)'] });
    expect(checkHostKey(file, 'repo.example.org', 22, key(K2))).toMatchObject({ ok: false, reason: 'changed', known: [K1_FP] });
  });

  it('a missing known_hosts file is a config error that names it and the flag', async () => {
    const missing = join(await tempDir(), 'nope');
    let err: unknown;
    try {
      checkHostKey(missing, 'repo.example.org', 22, key(K1));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TarportError);
    expect((err as TarportError).code).toBe('CONFIG');
    expect((err as TarportError).message).toBe(`known hosts file ${missing}: not found; give one with --known-hosts`);
  });
});
