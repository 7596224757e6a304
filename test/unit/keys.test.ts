import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { keysGenerateCommand } from '../../src/cli/commands/keys.js';
import { Output } from '../../src/cli/output.js';
import { tempDir } from '../helpers.js';

describe('keys generate', () => {
  it('an e-mail address OpenPGP.js refuses (no dot in the domain) is a usage error naming it, and writes nothing', async () => {
    const dir = await tempDir('tarport-keys-');
    const ctx = { out: new Output(false, true), signal: new AbortController().signal };
    await expect(keysGenerateCommand(ctx, { uid: 'CI <ci@x>', out: join(dir, 'k'), type: 'ecc' })).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('"ci@x"') });
    expect(await readdir(dir)).toEqual([]);
    expect(await keysGenerateCommand(ctx, { uid: 'CI <ci@example.org>', out: join(dir, 'k'), type: 'ecc' })).toBe(0);
    expect((await readdir(dir)).sort()).toEqual(['k.pub.asc', 'k.sec.asc']);
  });

  it('a --passphrase-file that is not there is a usage error naming it (exit 2), and writes nothing', async () => {
    const dir = await tempDir('tarport-keys-');
    const ctx = { out: new Output(false, true), signal: new AbortController().signal };
    await expect(keysGenerateCommand(ctx, { uid: 'CI', out: join(dir, 'k'), type: 'ecc', passphraseFile: join(dir, 'nope.txt') })).rejects.toMatchObject({ code: 'USAGE', message: `--passphrase-file ${join(dir, 'nope.txt')}: not found` });
    expect(await readdir(dir)).toEqual([]);
  });
});
