import { describe, expect, it, vi } from 'vitest';
import { TarportError } from '../../src/errors.js';
import { Output, forTerminal } from '../../src/cli/output.js';
import { maskLocationString, parseLocation } from '../../src/transport/location.js';

describe('what reaches the terminal', () => {
  it('control characters from a repository are shown, not acted on; newlines and tabs stay', () => {
    expect(forTerminal('app\x1b]0;pwned\x07:1\x1b[2J')).toBe('app\\x1b]0;pwned\\x07:1\\x1b[2J');
    expect(forTerminal('a\x9bb')).toBe('a\\x9bb');
    expect(forTerminal('line one\n\tline two')).toBe('line one\n\tline two');
  });

  it.each(['ftp://u:pa/ss@host/dir', 'ftp://u:p@ss@host/dir', 'sftp://u:s3cr3t@host:22/x@y'])('a refused URL never echoes its password: %s', (url) => {
    const pw = /^[a-z]+:\/\/u:(.*)@host/.exec(url)![1]!;
    let message = '';
    try {
      parseLocation(url);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).not.toBe('');
    expect(message).not.toContain(pw);
    expect(maskLocationString(url)).not.toContain(pw);
  });
});

describe('the one --json document of a run an error ends', () => {
  it('carries what the run did so far beside the error, as it stood when the error came', () => {
    const written: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => (written.push(String(c)), true));
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const out = new Output(true);
      const soFar = { loaded: [] as { ref: string }[], upToDate: [] as string[] };
      out.doneSoFar(soFar);
      soFar.loaded.push({ ref: 'app:1' });
      expect(out.error(new TarportError('ABORTED', 'interrupted by SIGTERM'))).toBe(1);
    } finally {
      spy.mockRestore();
      stderr.mockRestore();
    }
    expect(written.map((w) => JSON.parse(w) as unknown)).toEqual([{ loaded: [{ ref: 'app:1' }], upToDate: [], error: { code: 'ABORTED', message: 'interrupted by SIGTERM' } }]);
  });
});
