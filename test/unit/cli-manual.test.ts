import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { commandTree } from '../../src/cli/main.js';
import { bashCompletion, manPage, zshCompletion } from '../../src/cli/manual.js';
import { VERSION } from '../../src/version.js';
import { ROOT } from '../helpers.js';

const run = promisify(execFile);
const COMMANDS = ['push', 'watch', 'pull', 'poll', 'ls', 'log', 'sync', 'inventory', 'check', 'gc', 'keys generate', 'demo'];

/** What bash completes for the words typed so far (the last one is being completed). */
async function complete(...words: string[]): Promise<string[]> {
  const script = `source "${join(ROOT, 'contrib/completion/tarport.bash')}"; COMP_WORDS=(tarport ${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length}; _tarport; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const { stdout } = await run('bash', ['-c', script]);
  return stdout.split('\n').filter(Boolean).sort();
}

describe('man page and completions', () => {
  it('the shipped files are what scripts/gen-manual makes from the command tree now', async () => {
    const program = commandTree();
    expect(await readFile(join(ROOT, 'man/tarport.1'), 'utf8')).toBe(manPage(program, VERSION));
    expect(await readFile(join(ROOT, 'contrib/completion/tarport.bash'), 'utf8')).toBe(bashCompletion(program));
    expect(await readFile(join(ROOT, 'contrib/completion/_tarport'), 'utf8')).toBe(zshCompletion(program));
  });

  it('groff renders the page without a warning, with every command and the exit codes', async () => {
    const { stdout, stderr } = await run('groff', ['-man', '-Tutf8', '-ww', join(ROOT, 'man/tarport.1')]);
    expect(stderr).toBe('');
    // the marks of bold and underline: overstrikes (groff 1.22, Debian 12) or SGR escapes (groff 1.23, Debian 13)
    const text = stdout.replace(/.\x08/g, '').replace(/\x1b\[[0-9;]*m/g, '');
    for (const c of COMMANDS) expect(text).toContain(`tarport ${c}`);
    expect(text).toMatch(/EXIT STATUS\s+0\s+done/);
    expect(text).toContain('--metrics-file');
    expect((await run('man', ['-l', '-P', 'cat', join(ROOT, 'man/tarport.1')], { env: { ...process.env, MANWIDTH: '100' } })).stdout).toContain('TARPORT(1)');
  });

  it('bash accepts the completion and it completes commands, subcommands and flags', async () => {
    await run('bash', ['-n', join(ROOT, 'contrib/completion/tarport.bash')]);
    expect(await complete('p')).toEqual(['poll', 'pull', 'push']);
    expect(await complete('keys', '')).toEqual(['generate']);
    expect(await complete('pull', '--tr')).toEqual(['--trust']);
    expect(await complete('push', 'x.tar', '--metrics-')).toEqual(['--metrics-file']);
    expect(await complete('poll', '--metrics-')).toEqual(['--metrics-file', '--metrics-listen']);
  });

  it('the zsh completion names every command and its flags', async () => {
    const z = await readFile(join(ROOT, 'contrib/completion/_tarport'), 'utf8');
    expect(z.split('\n')[0]).toBe('#compdef tarport');
    for (const c of COMMANDS) expect(z).toContain(`'${c}') _arguments`);
    expect(z).toContain("'--trust[accept only releases signed by this OpenPGP public key (repeatable)]:value:_files'");
    expect(z).toMatch(/^ {4}'pull'\) _arguments -s .*'--trust\[/m);
  });
});
