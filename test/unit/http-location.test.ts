import { describe, expect, it } from 'vitest';
import { formatLocation, parseLocation } from '../../src/transport/index.js';

describe('http(s) locations', () => {
  it('parse with default ports and no user unless one is named', () => {
    expect(parseLocation('https://mirror.example/tarport/repo')).toEqual({ kind: 'https', host: 'mirror.example', port: 443, user: '', path: '/tarport/repo' });
    expect(parseLocation('http://127.0.0.1:8080/r')).toEqual({ kind: 'http', host: '127.0.0.1', port: 8080, user: '', path: '/r' });
    expect(parseLocation('https://deploy@mirror.example/r')).toMatchObject({ kind: 'https', user: 'deploy' });
  });

  it('print without a user when there is none, and with it when there is', () => {
    expect(formatLocation(parseLocation('https://mirror.example/r'))).toBe('https://mirror.example:443/r');
    expect(formatLocation(parseLocation('https://deploy@mirror.example/r'))).toBe('https://deploy@mirror.example:443/r');
  });

  it('refuse a password in the URL without echoing it', () => {
    let err: unknown;
    try {
      parseLocation('https://deploy:hunter2@mirror.example/r');
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'USAGE' });
    expect((err as Error).message).not.toContain('hunter2');
  });

  it('name http and https among the schemes a typo is told about', () => {
    expect(() => parseLocation('https:mirror.example/r')).toThrow(/write https:\/\//);
    expect(() => parseLocation('gopher://x/r')).toThrow(/http:\/\/, https:\/\/ or s3:\/\//);
  });
});
