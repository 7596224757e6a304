import { describe, expect, it } from 'vitest';
import { decodeSegment, encodeSegment, familiarName, isPortableFileName, parseRef, qualifiedName, sameName, validateName } from '../../src/repo/names.js';

describe('portable name encoding', () => {
  // each row: a name that would be unsafe or ambiguous on FAT32/exFAT/NTFS as it is
  const rows: [string, string][] = [
    ['app', 'plain lowercase passes through'],
    ['registry.example:5000/team/app', 'colon and slashes of a registry name'],
    ['V1', 'uppercase would collide with v1 on case-insensitive media'],
    ['con', 'a Windows device name'],
    ['nul.txt', 'a device name with an extension'],
    ['1.0.', 'a trailing dot is dropped by Windows'],
    ['.hidden', 'a leading dot'],
    ['a%b', 'the escape character itself'],
    ['x*y?"<>|\\', 'every character FAT forbids'],
  ];
  it.each(rows)('%s round-trips and is portable (%s)', (name) => {
    const enc = encodeSegment(name);
    expect(isPortableFileName(enc)).toBe(true);
    // outside %XX escapes, only lowercase letters, digits and . _ -
    expect(enc.replace(/%[0-9A-F]{2}/g, '')).toMatch(/^[a-z0-9._-]*$/);
    expect(decodeSegment(enc)).toBe(name);
  });

  it('keeps distinct names distinct, also case-insensitively', () => {
    const names = ['v1', 'V1', 'app', 'App', 'a:b', 'a%3Ab'];
    const encoded = names.map((n) => encodeSegment(n).toLowerCase());
    expect(new Set(encoded).size).toBe(names.length);
  });

  it('refuses to decode something it never encoded', () => {
    expect(() => decodeSegment('a:b')).toThrow(/not an encoded name/);
  });

  it('a %-escape that is not UTF-8 is a named INTEGRITY refusal, not a crash', () => {
    expect(() => decodeSegment('app%FF')).toThrow(expect.objectContaining({ code: 'INTEGRITY', message: expect.stringContaining('"app%FF"') }));
  });
});

describe('image references', () => {
  it.each([
    ['app:1', 'app', '1'],
    ['registry.example:5000/team/app:v2.1', 'registry.example:5000/team/app', 'v2.1'],
    ['localhost:5000/app', 'localhost:5000/app', 'latest'],
  ])('%s parses', (ref, name, tag) => {
    expect(parseRef(ref, { defaultTag: 'latest' })).toEqual({ name, tag });
  });

  it.each([
    ['App:1', /invalid image name/],
    ['app:-x', /invalid tag/],
    ['app@sha256:00', /digests are not supported/],
    ['bad name:1', /invalid image name/],
  ])('%s is refused', (ref, msg) => {
    expect(() => parseRef(ref, { defaultTag: 'latest' })).toThrow(msg);
  });
});

describe("Docker's reference rules: one name, however it is spelled", () => {
  it.each([
    ['docker.io/library/x', 'x', 'docker.io/library/x'],
    ['index.docker.io/library/x', 'x', 'docker.io/library/x'],
    ['library/x', 'x', 'docker.io/library/x'],
    ['x', 'x', 'docker.io/library/x'],
    ['docker.io/x', 'x', 'docker.io/library/x'],
    ['docker.io/a/b', 'a/b', 'docker.io/a/b'],
    ['index.docker.io/a/b', 'a/b', 'docker.io/a/b'],
    ['a/b', 'a/b', 'docker.io/a/b'],
    // library/ stays where it is not an official image's single segment
    ['docker.io/library/a/b', 'library/a/b', 'docker.io/library/a/b'],
    ['registry.example:5000/team/app', 'registry.example:5000/team/app', 'registry.example:5000/team/app'],
    ['localhost/app', 'localhost/app', 'localhost/app'],
    ['ghcr.io/library/x', 'ghcr.io/library/x', 'ghcr.io/library/x'],
  ])('%s → familiar %s, qualified %s', (name, familiar, qualified) => {
    expect(familiarName(name)).toBe(familiar);
    expect(qualifiedName(name)).toBe(qualified);
    expect(sameName(name, familiar)).toBe(true);
  });

  it('parseRef and validateName hand out the familiar form', () => {
    expect(parseRef('docker.io/library/x:1')).toEqual({ name: 'x', tag: '1' });
    expect(parseRef('index.docker.io/acc/multi:1')).toEqual({ name: 'acc/multi', tag: '1' });
    expect(validateName('docker.io/acc/multi')).toBe('acc/multi');
  });

  it('keeps other registries apart', () => {
    expect(sameName('ghcr.io/a/b', 'a/b')).toBe(false);
    expect(sameName('docker.io/a/b', 'a/c')).toBe(false);
  });
});

describe('names too long for a folder', () => {
  it('a tag or name that encodes past 255 characters is refused at parseRef, naming the length; one that fits is taken', () => {
    const tag = 'V'.repeat(128); // valid for Docker, 384 characters encoded
    expect(() => parseRef(`app:${tag}`)).toThrow(`its tag is 384 characters as a folder name (an uppercase letter, '/' or ':' takes three), more than the 255 a file system allows`);
    expect(parseRef(`app:${'v'.repeat(128)}`).tag).toBe('v'.repeat(128));
    const name = Array.from({ length: 60 }, () => 'ab').join('/'); // 179 characters, 297 encoded
    expect(() => parseRef(`${name}:1`)).toThrow('its name is 297 characters as a folder name');
  });
});
