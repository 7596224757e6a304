import { resolve } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { formatLocation, maskLocationString, parseLocation, type Location } from '../../../src/transport/location.js';

/** The TarportError that parsing `input` throws (fails the test when it parses). */
function refusal(input: string): TarportError {
  try {
    parseLocation(input);
  } catch (e) {
    if (e instanceof TarportError) return e;
    throw new Error(`${input}: not a TarportError: ${String(e)}`);
  }
  throw new Error(`${input} was accepted`);
}

afterEach(() => vi.unstubAllEnvs());

describe('parseLocation: every scheme', () => {
  const rows: [string, Location, string][] = [
    // a plain path is a local directory, made absolute
    ['repo', { kind: 'file', path: resolve('repo') }, 'relative path'],
    ['./ftp:odd', { kind: 'file', path: resolve('ftp:odd') }, './ makes a colon a path'],
    ['/srv/repo', { kind: 'file', path: '/srv/repo' }, 'absolute path'],
    ['file:///srv/my%20repo', { kind: 'file', path: '/srv/my repo' }, 'file:// is %-decoded'],
    ['file://localhost/srv/repo', { kind: 'file', path: '/srv/repo' }, 'file://localhost is this host'],
    // remote: default ports and users
    ['ftp://host.example/repo', { kind: 'ftp', host: 'host.example', port: 21, user: 'anonymous', path: '/repo' }, 'ftp defaults'],
    ['ftps://deploy@host.example:2121/a/b', { kind: 'ftps', host: 'host.example', port: 2121, user: 'deploy', path: '/a/b' }, 'ftps with user and port'],
    ['sftp://deploy@host.example/srv/repo', { kind: 'sftp', host: 'host.example', port: 22, user: 'deploy', path: '/srv/repo' }, 'sftp defaults to port 22'],
    ['FTP://Host.Example/Repo', { kind: 'ftp', host: 'host.example', port: 21, user: 'anonymous', path: '/Repo' }, 'scheme and host are case-insensitive, the path is not'],
    ['ftp://host.example', { kind: 'ftp', host: 'host.example', port: 21, user: 'anonymous', path: '/' }, 'no path: the root'],
    ['sftp://d%40x@host.example/my%20repo', { kind: 'sftp', host: 'host.example', port: 22, user: 'd@x', path: '/my repo' }, 'user and path are %-decoded'],
    ['sftp://u@[::1]:2222/r', { kind: 'sftp', host: '::1', port: 2222, user: 'u', path: '/r' }, 'IPv6: the address without brackets'],
    // s3: a bucket and a key prefix, no slashes at either end
    ['s3://releases/site-a/', { kind: 's3', bucket: 'releases', prefix: 'site-a' }, 's3 bucket and prefix'],
    ['s3://my.bucket-1', { kind: 's3', bucket: 'my.bucket-1', prefix: '' }, 's3 bucket root'],
    ['S3://releases/a/My%20Repo', { kind: 's3', bucket: 'releases', prefix: 'a/My Repo' }, 's3 prefix is %-decoded and keeps its case'],
  ];
  it.each(rows)('%s', (input, want, why) => {
    expect(parseLocation(input), why).toEqual(want);
  });

  it('sftp without a user takes the local user name', () => {
    vi.stubEnv('USER', 'operator7');
    expect(parseLocation('sftp://host.example/r')).toMatchObject({ kind: 'sftp', user: 'operator7' });
  });

  it('formats a location without password, IPv6 in brackets, and parses back to the same', () => {
    for (const input of ['ftps://deploy@host.example:2121/a/b', 'sftp://u@[::1]:2222/r', 'sftp://d%40x@h/p']) {
      const loc = parseLocation(input);
      expect(parseLocation(formatLocation(loc))).toEqual(loc);
    }
    expect(formatLocation(parseLocation('sftp://u@[::1]:2222/r'))).toBe('sftp://u@[::1]:2222/r');
    expect(formatLocation(parseLocation('/srv/repo'))).toBe('/srv/repo');
    expect(formatLocation(parseLocation('s3://releases/a/b/'))).toBe('s3://releases/a/b');
  });
});

describe('parseLocation: refusals are usage errors that name the input', () => {
  const rows: [string, RegExp, string][] = [
    ['', /empty repository location/, 'empty'],
    ['  ', /empty repository location/, 'blank'],
    ['ftp:host/repo', /write ftp:\/\//, 'a missing // is a typo, not a relative path'],
    ['SFTP:host/repo', /write SFTP:\/\//, 'in any case'],
    ['gopher://host/repo', /unknown scheme gopher:\/\//, 'a scheme tarport does not speak'],
    ['sftp:///srv/repo', /no host \(write sftp:\/\/HOST\/PATH\)/, 'no host'],
    ['ftp:///srv/repo', /no host \(write ftp:\/\/HOST\/PATH\)/, 'no host on a special scheme (the URL parser would take "srv" as the host)'],
    ['ftp://host:99999/x', /is not a valid URL/, 'port out of range'],
    ['ftp://host:0/x', /port 0/, 'port 0'],
    ['file://otherhost/x', /file:\/\/ URLs take an absolute path/, 'file:// on another host'],
    ['s3:bucket/x', /write s3:\/\//, 's3 without //'],
    ['s3://deploy@bucket/x', /an s3:\/\/ location names no user or password; credentials come from the AWS chain/, 's3 with a user'],
    ['s3://deploy:secret@bucket/x', /s3:\/\/deploy:\*\*\*@bucket\/x: an s3:\/\/ location names no user or password/, 's3 with a password: masked'],
    ['s3://bucket:9000/x', /names no port; give the server with --s3-endpoint/, 's3 with a port'],
    ['s3://Bad_Bucket/x', /"Bad_Bucket" is no valid bucket name/, 's3 bucket with capitals and _'],
    ['s3://ab/x', /"ab" is no valid bucket name/, 's3 bucket too short'],
    ['s3://bucket/a//b', /empty, "\." or "\.\." segment/, 's3 prefix with an empty segment'],
  ];
  it.each(rows)('%j', (input, message, why) => {
    const e = refusal(input);
    expect(e.code, why).toBe('USAGE');
    expect(e.message, why).toMatch(message);
  });

  it('a bad %-escape names the part and the escape (not an internal URIError)', () => {
    const rows: [string, string, string][] = [
      ['sftp://host/a%zzb', 'path "/a%zzb"', '"%zz"'],
      ['sftp://us%zzer@host/a', 'user name "us%zzer"', '"%zz"'],
      ['file:///srv/100%', 'path "/srv/100%"', '"%"'],
      ['ftp://host/x%e9y', 'path "/x%e9y"', '"%e9"'], // well-formed escape, not UTF-8
      ['ftp://host/%41%zz', 'path "/%41%zz"', '"%zz"'], // the bad one, not the first
    ];
    for (const [input, part, near] of rows) {
      const e = refusal(input);
      expect(e.code, input).toBe('USAGE');
      expect(e.message, input).toContain(`the ${part} has a bad %-escape near ${near}`);
    }
  });

  it('refuses a password in the URL and never echoes it, whatever characters it holds', () => {
    const secrets = ['hunter2', 'p@ss', 'pa/ss', 'pa#ss', 'pa?ss', 'p%40ss', '12345', 'a:b'];
    for (const secret of secrets) {
      for (const scheme of ['ftp', 'ftps', 'sftp', 'file']) {
        const input = `${scheme}://deploy:${secret}@host.example/repo`;
        const e = refusal(input);
        expect(e.code, input).toBe('USAGE');
        expect(e.message, input).not.toContain(secret);
        expect(e.message, input).toContain('***');
      }
    }
    expect(refusal('sftp://deploy:hunter2@host/r').message).toMatch(/a password does not belong in the URL; use TARPORT_PASSWORD or --password-file/);
  });
});

describe('maskLocationString', () => {
  const rows: [string, string, string][] = [
    ['ftp://u:secret@h/x', 'ftp://u:***@h/x', 'a plain password'],
    ['ftp://u:p@ss@h/x', 'ftp://u:***@h/x', 'an @ in the password: up to the last @'],
    ['sftp://u:pa/ss@h/x', 'sftp://u:***@h/x', 'a / in the password'],
    ['upload to ftp://a:b@c/x failed; also sftp://d:e@f/y', 'upload to ftp://a:***@c/x failed; also sftp://d:***@f/y', 'every URL in a message, each up to its own @'],
    ['ftp://host:21/path@2', 'ftp://host:21/path@2', 'a port is no password'],
    ['ftp://host/x', 'ftp://host/x', 'nothing to mask'],
    ['mail me at a:b@c', 'mail me at a:b@c', 'not a URL'],
  ];
  it.each(rows)('%s', (input, want, why) => {
    expect(maskLocationString(input), why).toBe(want);
  });
});
