import { FTPError } from 'basic-ftp';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../src/errors.js';
import { FtpTransport } from '../../src/transport/ftp.js';
import { StalledError } from '../../src/transport/ftpdata.js';
import { parseLocation } from '../../src/transport/location.js';
import { SftpTransport } from '../../src/transport/sftp.js';

// Each fault class, as the libraries report it (FTP reply codes, Node errno and TLS codes, ssh2's
// error level, SFTP status codes), mapped to what happens next: retried (transient) or told at once.

type Classifier = { classify(e: unknown, op: string): TarportError };
const ftp = new FtpTransport(parseLocation('ftp://u@127.0.0.1:2121/x') as never) as unknown as Classifier;
const sftp = new SftpTransport(parseLocation('sftp://u@127.0.0.1:2222/x') as never) as unknown as Classifier;
const errno = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1`), { code });
const ftpReply = (code: number, text: string) => new FTPError({ code, message: `${code} ${text}` });

describe('FTP faults are classified by reply and error codes', () => {
  it.each([
    ['auth failure (530)', ftpReply(530, 'Login incorrect.'), 'IO', false],
    ['permission denied (550)', ftpReply(550, 'Permission denied.'), 'IO', false],
    ['disk full (552)', ftpReply(552, 'Exceeded storage allocation.'), 'IO', false],
    ['disk full (452)', ftpReply(452, 'Insufficient storage.'), 'IO', false],
    ['server busy (421)', ftpReply(421, 'Too many connections.'), 'CONNECTION', true],
    ['connection refused', errno('ECONNREFUSED'), 'CONNECTION', true],
    ['connection reset', errno('ECONNRESET'), 'CONNECTION', true],
    ['stall', new StalledError('the data connection stalled'), 'CONNECTION', true],
    ['certificate not trusted', errno('SELF_SIGNED_CERT_IN_CHAIN'), 'UNTRUSTED', false],
    ['certificate for another name', errno('ERR_TLS_CERT_ALTNAME_INVALID'), 'UNTRUSTED', false],
  ] as const)('%s', (_name, e, code, retryable) => {
    expect(ftp.classify(e, 'op')).toMatchObject({ code, retryable });
  });

  it('wording does not decide: a message that talks of certificates, without a TLS code, is a connection fault', () => {
    expect(ftp.classify(new Error('certificate unable to verify self-signed'), 'op')).toMatchObject({ code: 'CONNECTION', retryable: true });
  });
});

describe('SFTP faults are classified by ssh2 levels, SFTP status codes and errno', () => {
  const status = (code: number, text: string) => Object.assign(new Error(text), { code });
  it.each([
    ['auth failure', Object.assign(new Error('All configured authentication methods failed'), { level: 'client-authentication' }), 'IO', false],
    ['permission denied (3)', status(3, 'Permission denied'), 'IO', false],
    ['disk full (14)', status(14, 'No space on filesystem'), 'IO', false],
    ['quota (15)', status(15, 'Quota exceeded'), 'IO', false],
    ['failure (4: how OpenSSH reports a full disk)', status(4, 'Failure'), 'IO', false],
    ['not found (2)', status(2, 'No such file'), 'NOT_FOUND', false],
    ['connection lost (7)', status(7, 'Connection lost'), 'CONNECTION', true],
    ['connection refused', errno('ECONNREFUSED'), 'CONNECTION', true],
    ['connection reset', errno('ECONNRESET'), 'CONNECTION', true],
    ['host key refused', new TarportError('UNTRUSTED', 'unknown host key', { retryable: false }), 'UNTRUSTED', false],
  ] as const)('%s', (_name, e, code, retryable) => {
    expect(sftp.classify(e, 'op')).toMatchObject({ code, retryable });
  });

  it('wording does not decide: "no space" in a message without a status code is not a full disk', () => {
    expect(sftp.classify(new Error('no space left, quota'), 'op')).toMatchObject({ code: 'CONNECTION', retryable: true });
  });

  it('a stall: the session found silent is named as such, and retried', () => {
    const s = sftp as unknown as { lost(session: { fault?: unknown }, op: string): TarportError };
    const err = s.lost({ fault: new TarportError('CONNECTION', 'stalled: nothing came from the server for 30 s', { retryable: true }) }, 'read x');
    expect(err).toMatchObject({ code: 'CONNECTION', retryable: true });
    expect(err.message).toContain('stalled');
  });
});
