import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { nameFor, parseNameRule } from '../../../src/producer/naming.js';
import { tempDir } from '../../helpers.js';

function thrown(f: () => unknown): TarportError {
  try {
    f();
  } catch (e) {
    if (e instanceof TarportError) return e;
    throw e;
  }
  throw new Error('nothing was thrown');
}

async function rejection(p: Promise<unknown>): Promise<TarportError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof TarportError)) throw new Error(`expected a TarportError, got ${String(e)}`);
  return e;
}

describe('parseNameRule', () => {
  it('turns {word} into a capture and everything else into literal text', () => {
    const r = parseNameRule('app-{version}.tar=registry.example/app:{version}');
    expect(r.source).toBe('app-{version}.tar=registry.example/app:{version}');
    expect(r.target).toBe('registry.example/app:{version}');
    expect(r.pattern.exec('app-1.2.3.tar')?.groups).toEqual({ version: '1.2.3' });
    expect(r.pattern.test('app-1.2.3Xtar')).toBe(false); // "." is a dot
    expect(r.pattern.test('xapp-1.tar')).toBe(false); // anchored
    expect(r.pattern.test('app-1.tar.gz')).toBe(false);
    expect(parseNameRule('(a+b)-{t}.tar=ab:{t}').pattern.exec('(a+b)-7.tar')?.groups).toEqual({ t: '7' });
  });

  const bad: [string, string][] = [
    ['app.tar', '--name-map "app.tar": write FILE-PATTERN=NAME:TAG, e.g. app-{version}.tar=app:{version}'], // no =
    ['=app:1', '--name-map "=app:1": write FILE-PATTERN=NAME:TAG, e.g. app-{version}.tar=app:{version}'], // no pattern
    ['app.tar=', '--name-map "app.tar=": write FILE-PATTERN=NAME:TAG, e.g. app-{version}.tar=app:{version}'], // no target
    ['app-{v}.tar=app:{version}', '--name-map "app-{v}.tar=app:{version}": {version} is not in the file pattern'],
  ];
  it.each(bad)('refuses %j as a usage error', (rule, message) => {
    const e = thrown(() => parseNameRule(rule));
    expect(e.code).toBe('USAGE');
    expect(e.message).toBe(message);
  });
});

describe('nameFor', () => {
  const rules = [parseNameRule('app-{version}.tar=app:{version}'), parseNameRule('{any}.tar=fallback:{any}')];

  it('a sidecar <file>.name wins over the rules; a name without tag gets "latest"', async () => {
    const dir = await tempDir();
    const file = join(dir, 'app-1.tar');
    await writeFile(`${file}.name`, ' registry.example/team/web:2.0 \n');
    expect(await nameFor(file, rules)).toEqual({ name: 'registry.example/team/web', tag: '2.0' });
    await writeFile(`${file}.name`, 'web\n');
    expect(await nameFor(file, rules)).toEqual({ name: 'web', tag: 'latest' });
  });

  it('the first matching rule names the file; none matching means the archive\'s own tags', async () => {
    const dir = await tempDir();
    expect(await nameFor(join(dir, 'app-1.4.tar'), rules)).toEqual({ name: 'app', tag: '1.4' });
    expect(await nameFor(join(dir, 'other.tar'), rules)).toEqual({ name: 'fallback', tag: 'other' });
    expect(await nameFor(join(dir, 'other.tgz'), rules)).toBeUndefined();
    expect(await nameFor(join(dir, 'app-1.4.tar'), [])).toBeUndefined();
  });

  it('a bad name is bad input that names the file and where the name came from', async () => {
    const dir = await tempDir();
    const file = join(dir, 'x.tar');
    await writeFile(`${file}.name`, 'Bad Name:1');
    const side = await rejection(nameFor(file, rules));
    expect(side.code).toBe('BAD_INPUT');
    expect(side.message.startsWith(`${file}.name: `)).toBe(true);
    const viaRule = await rejection(nameFor(join(dir, 'app-NOT OK.tar'), rules));
    expect(viaRule.code).toBe('BAD_INPUT');
    expect(viaRule.message.startsWith(`${join(dir, 'app-NOT OK.tar')}: --name-map app-{version}.tar=app:{version} gives "app:NOT OK": `)).toBe(true);
  });
});
