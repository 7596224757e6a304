import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import type { Command, Option } from 'commander';
import { TarportError } from '../errors.js';

/**
 * Every flag can come from a config file (TOML or YAML, the flag's own name as key) or from the
 * environment (TARPORT_ + the flag name in upper snake case); a flag wins over the environment, which
 * wins over the file (CLI.md). Commander handles flag > env; this module adds the file underneath.
 */
export async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new TarportError('CONFIG', `config file ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (e as Error).message}`);
  }
  let data: unknown;
  const ext = extname(path).toLowerCase();
  try {
    data = ext === '.toml' ? await parseToml(text) : ext === '.yaml' || ext === '.yml' ? await parseYaml(text) : await guess(text);
  } catch (e) {
    throw new TarportError('CONFIG', `config file ${path} is not valid ${ext === '.toml' ? 'TOML' : ext ? 'YAML' : 'TOML or YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) throw new TarportError('CONFIG', `config file ${path}: expected a table of flag names and values`);
  return data as Record<string, unknown>;
}

async function guess(text: string): Promise<unknown> {
  try {
    return await parseToml(text);
  } catch {
    return parseYaml(text);
  }
}

// The parsers load only when a config file is read: every command starts faster without them.
const parseToml = async (text: string): Promise<unknown> => (await import('smol-toml')).parse(text);
const parseYaml = async (text: string): Promise<unknown> => (await import('yaml')).parse(text);

/** The environment variable that sets a flag: --sign-key → TARPORT_SIGN_KEY. */
export function envName(long: string): string {
  return 'TARPORT_' + long.replace(/^--/, '').replace(/-/g, '_').toUpperCase();
}

/** The key an option has in config files: its long flag without dashes (sign-key). */
export function configKey(opt: Option): string {
  return (opt.long ?? '').replace(/^--(no-)?/, '');
}

/**
 * Applies config file values to the options the command line and environment left unset. Unknown
 * keys are refused (they are usually typos), all of them listed at once. `known` is every flag name of
 * every command: one file can serve the producer and the consumer.
 */
export function applyConfig(cmd: Command, config: Record<string, unknown>, known: ReadonlySet<string>, path: string): void {
  const unknown = Object.keys(config).filter((k) => !known.has(k) && k !== 'config');
  if (unknown.length > 0) {
    throw new TarportError('CONFIG', `config file ${path}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (keys are flag names, such as "to" or "compress")`);
  }
  const bad: string[] = [];
  for (const opt of cmd.options as readonly Option[]) {
    const key = configKey(opt);
    if (!(key in config)) continue;
    const attr = opt.attributeName();
    const source = cmd.getOptionValueSource(attr);
    if (source === 'cli' || source === 'env') continue;
    let v = config[key];
    if (opt.variadic || /\.\.\.[\]>]$/.test(opt.flags)) {
      if (!Array.isArray(v)) v = [v];
      if ((v as unknown[]).some((x) => typeof x !== 'string' && typeof x !== 'number')) bad.push(`${key}: expected a list of strings`);
      v = (v as unknown[]).map(String);
    } else if (opt.isBoolean()) {
      if (typeof v !== 'boolean') bad.push(`${key}: expected true or false`);
    } else if (typeof v === 'number') {
      v = String(v);
    } else if (typeof v !== 'string') {
      bad.push(`${key}: expected a string`);
    }
    cmd.setOptionValueWithSource(attr, v, 'config');
  }
  if (bad.length > 0) throw new TarportError('CONFIG', `config file ${path}: ${bad.join('; ')}`);
}
