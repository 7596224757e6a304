import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { describe, expect, it } from 'vitest';
import { writeDemoArchives } from '../../src/archive/index.js';
import { applyConfig, applyEnvBooleans, collect, configSchema, parseEnvBoolean, validateConfig } from '../../src/cli/config.js';
import { isTarportError } from '../../src/errors.js';
import { ROOT, SMALL, filesBelow, tarport, tarportInProcess, tempDir } from '../helpers.js';

async function compressionUsed(repo: string): Promise<string> {
  const [rec] = (await filesBelow(join(repo, 'tarport/releases')));
  return JSON.parse(await readFile(join(repo, 'tarport/releases', rec!), 'utf8')).layers[0].compression;
}

describe('flags, environment and config file', () => {
  it('a flag wins over the environment, which wins over the file', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const cfg = join(dir, 'tarport.toml');
    await writeFile(cfg, `compress = "gzip"\nto = "${join(dir, 'from-file')}"\n`);
    expect((await tarportInProcess(['--config', cfg, 'push', '--init', v1!])).code).toBe(0);
    expect(await compressionUsed(join(dir, 'from-file'))).toBe('gzip');
    expect((await tarportInProcess(['--config', cfg, 'push', '--init', v1!, '--to', join(dir, 'env')], { TARPORT_COMPRESS: 'none' })).code).toBe(0);
    expect(await compressionUsed(join(dir, 'env'))).toBe('none');
    expect((await tarportInProcess(['--config', cfg, 'push', '--init', v1!, '--to', join(dir, 'flag'), '--compress', 'zstd'], { TARPORT_COMPRESS: 'none' })).code).toBe(0);
    expect(await compressionUsed(join(dir, 'flag'))).toBe('zstd');
  });

  it('YAML works too, and unknown keys are refused by name with exit 2', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const cfg = join(dir, 'tarport.yaml');
    await writeFile(cfg, `to: ${join(dir, 'repo')}\ncompres: gzip\nsign_kye: x\n`);
    const r = await tarportInProcess(['--config', cfg, 'push', '--init', v1!]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(cfg);
    expect(r.stderr).toMatch(/unknown keys "compres", "sign_kye"/);
    expect(await filesBelow(join(dir, 'repo'))).toEqual([]);
  });

  it('bad usage exits 2; --help and --version exit 0', async () => {
    // the launcher itself, as a user runs it: a real process each
    expect((await tarport(['push'])).code).toBe(2);
    expect((await tarportInProcess(['push', '--init', 'x.tar', '--bogus'])).code).toBe(2);
    expect((await tarportInProcess(['nonsense'])).code).toBe(2);
    expect((await tarportInProcess(['--help'])).code).toBe(0);
    expect((await tarport(['--version'])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('a missing repository location or a password in a URL is a usage error', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const noTo = await tarportInProcess(['push', '--init', v1!]);
    expect(noTo.code).toBe(2);
    expect(noTo.stderr).toMatch(/--to URL/);
    const pw = await tarportInProcess(['push', '--init', v1!, '--to', 'sftp://me:secret@example.invalid/repo']);
    expect(pw.code).toBe(2);
    expect(pw.stderr).not.toContain('secret');
    expect(pw.stderr).toMatch(/TARPORT_PASSWORD/);
  });
});

describe('config files are checked by a schema made from the flags', () => {
  const opts = () => {
    const c = new Command('x')
      .addOption(new Option('--trust <keyfile>').argParser(collect))
      .addOption(new Option('--to <url>'))
      .addOption(new Option('--once'))
      .addOption(new Option('--no-ack'));
    return c.options as readonly Option[];
  };

  it('a repeatable flag takes a list, and a plain string is one value, never its characters', () => {
    const schema = configSchema(opts());
    expect(validateConfig(schema, { trust: ['a.asc', 'b.asc'] }, 'f.toml')).toEqual({ trust: ['a.asc', 'b.asc'] });
    expect(validateConfig(schema, { trust: 'key.asc' }, 'f.toml')).toEqual({ trust: ['key.asc'] });
    expect(validateConfig(schema, { to: 7 }, 'f.toml')).toEqual({ to: '7' });
    expect(validateConfig(schema, { ack: false }, 'f.toml')).toEqual({ ack: false });
  });

  it('every wrong key is named with the file, what was expected and what was found', () => {
    const schema = configSchema(opts());
    const fail = (data: Record<string, unknown>) => {
      try {
        validateConfig(schema, data, '/etc/tarport/x.toml');
      } catch (e) {
        expect(isTarportError(e, 'CONFIG')).toBe(true);
        return (e as Error).message;
      }
      throw new Error('accepted');
    };
    expect(fail({ trust: [1, { a: 1 }] })).toBe('config file /etc/tarport/x.toml: key "trust.1": expected a string, not a table');
    expect(fail({ once: 'yes' })).toBe('config file /etc/tarport/x.toml: key "once": expected true or false, not the string "yes"');
    expect(fail({ to: ['a', 'b'], once: 1 })).toBe('config file /etc/tarport/x.toml: key "to": expected a string, not a list; key "once": expected true or false, not the number 1');
    expect(fail({ tos: 'x' })).toMatch(/^config file \/etc\/tarport\/x.toml: unknown key "tos" /);
  });

  it('applies values only where neither the command line nor the environment set the flag', () => {
    const c = new Command('x').addOption(new Option('--to <url>')).addOption(new Option('--trust <k>').argParser(collect)).exitOverride();
    c.parse(['--to', 'cli'], { from: 'user' });
    applyConfig(c, { to: 'file', trust: ['a', 'b'] });
    expect(c.opts()).toEqual({ to: 'cli', trust: ['a', 'b'] });
  });
});

describe('boolean environment variables', () => {
  it('accept true/false, 1/0 and yes/no in any case', () => {
    for (const v of ['true', 'TRUE', '1', 'yes', 'Yes', ' yes ']) expect(parseEnvBoolean('TARPORT_X', v)).toBe(true);
    for (const v of ['false', 'False', '0', 'no', 'NO']) expect(parseEnvBoolean('TARPORT_X', v)).toBe(false);
  });

  it('refuse anything else, naming the variable and the value', () => {
    for (const v of ['', 'maybe', 'on', '2', 'y']) {
      expect(() => parseEnvBoolean('TARPORT_ALLOW_EXPIRED', v)).toThrow(`environment variable TARPORT_ALLOW_EXPIRED=${JSON.stringify(v)}: expected true or false`);
    }
  });

  it('turn a flag off as well as on; a --no- flag reads its variable the right way round', () => {
    const make = () => new Command('x').addOption(new Option('--once').env('T_ONCE')).addOption(new Option('--no-ack').env('T_NO_ACK')).exitOverride();
    const off = make();
    off.parse([], { from: 'user' });
    applyEnvBooleans(off, { T_ONCE: 'false', T_NO_ACK: 'yes' });
    expect(off.opts()).toEqual({ once: false, ack: false });
    const cli = make();
    cli.parse(['--once'], { from: 'user' });
    applyEnvBooleans(cli, { T_ONCE: 'no', T_NO_ACK: '0' });
    expect(cli.opts()).toEqual({ once: true, ack: true });
  });
});

describe('through the command line', () => {
  it('TOML: trust as a plain string is one file; as a list, each file in order', async () => {
    const dir = await tempDir();
    const keys = await tarportInProcess(['keys', 'generate', '--uid', 'T <t@example.org>', '--out', join(dir, 'k'), '--type', 'ecc']);
    expect(keys.code).toBe(0);
    const one = join(dir, 'one.toml');
    await writeFile(one, `from = "${join(dir, 'repo')}"\ntrust = "${join(dir, 'missing.asc')}"\n`);
    const r1 = await tarportInProcess(['--config', one, 'pull', '--state', join(dir, 'st')]);
    expect(r1.code).toBe(2);
    expect(r1.stderr).toContain(`--trust ${join(dir, 'missing.asc')}`);
    const list = join(dir, 'list.toml');
    await writeFile(list, `from = "${join(dir, 'repo')}"\ntrust = ["${join(dir, 'k.pub.asc')}", "${join(dir, 'second.asc')}"]\n`);
    const r2 = await tarportInProcess(['--config', list, 'pull', '--state', join(dir, 'st')]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain(`--trust ${join(dir, 'second.asc')}`);
  });

  it('YAML: name-map as a list and as a plain string reach the watch agent whole', async () => {
    const dir = await tempDir();
    const drop = join(dir, 'drop');
    await mkdir(drop);
    for (const [file, body] of [
      ['list.yaml', `to: ${join(dir, 'repo')}\nname-map:\n  - "app-{version}.tar=app:{version}"\n  - "no equals sign"\n`],
      ['string.yaml', `to: ${join(dir, 'repo')}\nname-map: "no equals sign"\n`],
    ] as const) {
      await writeFile(join(dir, file), body);
      const r = await tarportInProcess(['--config', join(dir, file), 'watch', drop, '--once']);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('--name-map "no equals sign": write FILE-PATTERN=NAME:TAG');
    }
  });

  it('TARPORT_ALLOW_EXPIRED=false does not allow an expired catalog; a value that is not a boolean is refused', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    expect((await tarportInProcess(['push', '--init', v1!, '--to', repo, '--catalog-ttl', '1ms'])).code).toBe(0);
    await new Promise((r) => setTimeout(r, 20));
    const pull = (v: string) => tarportInProcess(['pull', '--from', repo, '--state', join(dir, 'st')], { TARPORT_ALLOW_EXPIRED: v, DOCKER_HOST: `unix://${join(dir, 'no-daemon.sock')}` });
    for (const v of ['false', 'NO', '0']) {
      const r = await pull(v);
      expect(r.code).toBe(3);
      expect(r.stderr).toContain('expired at');
    }
    const bad = await pull('maybe');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('TARPORT_ALLOW_EXPIRED="maybe"');
    const on = await pull('yes');
    expect(on.stderr).toContain('loading anyway because --allow-expired was given');
  });

  it('inventory --from and demo --repo-dir; the old --repo keeps working and says it is deprecated', async () => {
    const dir = await tempDir();
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const repo = join(dir, 'repo');
    expect((await tarportInProcess(['push', '--init', v1!, '--to', repo])).code).toBe(0);
    const fresh = await tarportInProcess(['inventory', '--from', repo, '-o', join(dir, 'a.json')]);
    expect(fresh.code).toBe(0);
    expect(fresh.stderr).not.toContain('deprecated');
    const old = await tarportInProcess(['inventory', '-o', join(dir, 'b.json')], { TARPORT_REPO: repo });
    expect(old.code).toBe(0);
    expect(old.stderr).toContain('--repo (and TARPORT_REPO) is deprecated: use --from (TARPORT_FROM)');
    expect(JSON.parse(await readFile(join(dir, 'b.json'), 'utf8')).objects).toEqual(JSON.parse(await readFile(join(dir, 'a.json'), 'utf8')).objects);
    const clash = await tarportInProcess(['inventory', '--from', repo, '--repo', join(dir, 'other'), '-o', join(dir, 'c.json')]);
    expect(clash.code).toBe(2);
    expect(clash.stderr).toContain('disagree');
    // -o into a folder that is not there: a usage error naming it, no stack trace
    const nowhere = await tarportInProcess(['inventory', '--from', repo, '-o', join(dir, 'missing', 'd.json')]);
    expect(nowhere.code).toBe(2);
    expect(nowhere.stderr).toContain(`-o ${join(dir, 'missing', 'd.json')}: the folder ${join(dir, 'missing')} does not exist`);
    // --from a location that holds no repository (a typo, a stick not mounted): no inventory of "nothing"
    const typo = await tarportInProcess(['inventory', '--from', join(dir, 'typo'), '-o', join(dir, 'e.json')]);
    expect([typo.code, existsSync(join(dir, 'e.json'))]).toEqual([1, false]);
    expect(typo.stderr).toContain(`inventory file://${join(dir, 'typo')}: it holds no tarport repository`);
  });
});

describe('demo: its flags are checked before it looks for a daemon', () => {
  it('--repo and --repo-dir that disagree are a usage error (exit 2) with no Docker daemon there', async () => {
    const dir = await tempDir();
    const r = await tarportInProcess(['demo', '--repo', join(dir, 'a'), '--repo-dir', join(dir, 'b'), '--json'], { DOCKER_HOST: `unix://${join(dir, 'no.sock')}` });
    expect([r.code, (JSON.parse(r.stdout) as { error: { code: string } }).error.code]).toEqual([2, 'USAGE']);
  });
});

describe('an empty value for a flag that takes one', () => {
  it('is refused (exit 2, naming the flag, variable or key), never read as "not given": a signature, a decryption or a bound would quietly be off', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'repo');
    const [v1] = await writeDemoArchives(dir, undefined, SMALL);
    const cfg = join(dir, 'c.toml');
    await writeFile(cfg, 'keep-images = ""\n');
    const cases: [string[], Record<string, string>, string][] = [
      [['push', '--init', v1!, '--to', repo, '--sign-key', ''], {}, 'USAGE --sign-key "": an empty value; leave the flag out for its default'],
      [['pull', '--from', repo, '--state', dir], { TARPORT_DECRYPT_KEY: '' }, "CONFIG environment variable TARPORT_DECRYPT_KEY: an empty value; unset it for --decrypt-key's default"],
      [['--config', cfg, 'pull', '--from', repo, '--state', dir], {}, `CONFIG config file ${cfg}: key "keep-images": an empty value; leave the key out for --keep-images's default`],
      [['pull', '--from', repo, '--state', dir, '--trust', ' '], {}, 'USAGE --trust " ": an empty value; leave the flag out for its default'],
    ];
    for (const [args, env, said] of cases) {
      const r = await tarportInProcess(['--json', ...args], env);
      expect([r.code, (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error].map((x) => (typeof x === 'object' ? `${x.code} ${x.message}` : x)), args.join(' ')).toEqual([2, said]);
    }
    expect(existsSync(repo)).toBe(false); // nothing was done
  });
});

describe('a value the command refuses, from the config file or the environment', () => {
  it('is a CONFIG fault naming the file and key, or the variable (exit 2); from the command line, the USAGE fault it was', async () => {
    const dir = await tempDir();
    const cfg = join(dir, 'c.yaml');
    await writeFile(cfg, 'keep: "x"\n');
    const repo = join(dir, 'repo');
    const said = async (args: string[], env: Record<string, string> = {}) => {
      const r = await tarportInProcess(['--json', ...args], env);
      const { code, message } = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
      return [r.code, code, message];
    };
    const why = '--keep "x": how many versions per tag to keep, 1 or more';
    expect(await said(['--config', cfg, 'gc', repo])).toEqual([2, 'CONFIG', `config file ${cfg}: key "keep": ${why}`]);
    expect(await said(['gc', repo], { TARPORT_KEEP: 'x' })).toEqual([2, 'CONFIG', `environment variable TARPORT_KEEP: ${why}`]);
    expect(await said(['gc', repo, '--keep', 'x'], { TARPORT_KEEP: '2' })).toEqual([2, 'USAGE', why]);
    expect(await said(['poll', '--from', repo], { TARPORT_INTERVAL: '30d' })).toEqual([2, 'CONFIG', 'environment variable TARPORT_INTERVAL: --interval "30d": at most 24d (the longest a timer waits)']);
  });
});

describe('the config examples in the docs', () => {
  it('every TOML and YAML block of docs/*.md passes the schema', async () => {
    const { parse: toml } = await import('smol-toml');
    const { parse: yaml } = await import('yaml');
    const { commandTree } = await import('../../src/cli/main.js');
    const all: Option[] = [];
    const walk = (c: Command) => {
      all.push(...(c.options as readonly Option[]));
      c.commands.forEach(walk);
    };
    walk(commandTree());
    const schema = configSchema(all);
    let blocks = 0;
    for (const doc of ['operations.md', 'producer.md', 'consumer.md', 'trust.md', 'airgap.md']) {
      const text = await readFile(join(ROOT, 'docs', doc), 'utf8');
      for (const m of text.matchAll(/```(toml|yaml)\n([\s\S]*?)```/g)) {
        blocks++;
        const data = (m[1] === 'toml' ? toml(m[2]!) : yaml(m[2]!)) as Record<string, unknown>;
        expect(() => validateConfig(schema, data, `docs/${doc}`)).not.toThrow();
      }
    }
    expect(blocks).toBeGreaterThanOrEqual(4);
  });
});
