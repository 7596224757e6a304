import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import type { Command, Option } from 'commander';
import * as z from 'zod';
import { TarportError } from '../errors.js';

/**
 * Every flag can come from a config file (TOML or YAML, the flag's own name as key) or from the
 * environment (TARPORT_ + the flag name in upper snake case); a flag wins over the environment, which
 * wins over the file (CLI.md). Commander handles flag > env; this module adds the file underneath,
 * checks the file against a zod schema made from the flags themselves, and reads boolean variables
 * strictly.
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

/** The argument parser of a repeatable flag (`--trust A --trust B`): a list, in order. */
export const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** A repeatable flag: one whose values are collected into a list. */
export function isRepeatable(opt: Option): boolean {
  return opt.parseArg === collect || opt.variadic;
}

/** The environment variable that sets a flag: --sign-key → TARPORT_SIGN_KEY. */
export function envName(long: string): string {
  return 'TARPORT_' + long.replace(/^--/, '').replace(/-/g, '_').toUpperCase();
}

/** The key an option has in config files: its long flag without dashes (sign-key). */
export function configKey(opt: Option): string {
  return (opt.long ?? '').replace(/^--(no-)?/, '');
}

type Kind = 'boolean' | 'list' | 'value';

function kindOf(opt: Option): Kind {
  if (isRepeatable(opt)) return 'list';
  return opt.isBoolean() || opt.negate ? 'boolean' : 'value';
}

// A scalar value in TOML or YAML may be a number (`connections = 4`, `interval: 30`): flags take text.
const scalar = z.union([z.string(), z.number()], { error: 'expected a string' }).transform(String);

const SCHEMAS: Record<Kind, z.ZodType> = {
  boolean: z.boolean({ error: 'expected true or false' }),
  // a plain string is one value of a repeatable flag, never a list of its characters
  list: z.preprocess((v) => (typeof v === 'string' || typeof v === 'number' ? [v] : v), z.array(scalar, { error: 'expected a string or a list of strings' })),
  value: scalar,
};

/** The schema of a config file: every flag of every command (one file can serve producer and consumer). */
export function configSchema(options: Iterable<Option>) {
  const shape: Record<string, z.ZodType> = { config: SCHEMAS.value.optional() };
  for (const opt of options) {
    const key = configKey(opt);
    if (key && !(key in shape)) shape[key] = SCHEMAS[kindOf(opt)].optional();
  }
  return z.strictObject(shape);
}

/** Checks a config file against the schema; every fault is listed at once, by key (exit 2). */
export function validateConfig(schema: ReturnType<typeof configSchema>, data: Record<string, unknown>, path: string): Record<string, unknown> {
  const r = schema.safeParse(data);
  if (r.success) return r.data as Record<string, unknown>;
  const faults = r.error.issues.map((i) => {
    if (i.code === 'unrecognized_keys') {
      return `unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')} (keys are flag names, such as "to" or "compress")`;
    }
    const key = i.path.map(String).join('.');
    const value = i.path.reduce<unknown>((v, p) => (v as Record<PropertyKey, unknown> | undefined)?.[p as PropertyKey], data);
    return `key "${key}": ${i.message}, not ${describeValue(value)}`;
  });
  throw new TarportError('CONFIG', `config file ${path}: ${faults.join('; ')}`);
}

function describeValue(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'object') return 'a table';
  return `${typeof v === 'string' ? 'the string' : `the ${typeof v}`} ${JSON.stringify(v)}`;
}

/**
 * Applies checked config file values to the options the command line and environment left unset.
 */
export function applyConfig(cmd: Command, config: Record<string, unknown>): void {
  for (const opt of cmd.options as readonly Option[]) {
    const key = configKey(opt);
    if (config[key] === undefined) continue;
    const attr = opt.attributeName();
    const source = cmd.getOptionValueSource(attr);
    if (source === 'cli' || source === 'env') continue;
    // `ack = false` is what --no-ack sets: the attribute of a --no-x flag is x itself
    cmd.setOptionValueWithSource(attr, config[key], 'config');
  }
}

/**
 * A flag that takes a value, given an empty one (`--sign-key ""`, `TARPORT_DECRYPT_KEY=` left by an
 * unset variable in a unit file, `sign-key = ""` in a config file): refused, never read as "not
 * given", which would quietly turn off what the flag asks for (a signature, a decryption, a bound).
 */
export function refuseEmptyValues(cmd: Command, file?: string): void {
  for (const opt of cmd.options as readonly Option[]) {
    if (kindOf(opt) === 'boolean') continue;
    const attr = opt.attributeName();
    const v: unknown = cmd.getOptionValue(attr);
    const empty = (Array.isArray(v) ? v : [v]).find((x): x is string => typeof x === 'string' && x.trim() === '');
    if (empty === undefined) continue;
    const source = cmd.getOptionValueSource(attr);
    if (source === 'env') throw new TarportError('CONFIG', `environment variable ${opt.envVar}: an empty value; unset it for ${opt.long}'s default`);
    if (source === 'config') throw new TarportError('CONFIG', `config file ${file}: key "${configKey(opt)}": an empty value; leave the key out for ${opt.long}'s default`);
    throw new TarportError('USAGE', `${opt.long} ${JSON.stringify(empty)}: an empty value; leave the flag out for its default`);
  }
}

/**
 * A flag's value refused by its command (USAGE naming the flag) that came from the config file or the
 * environment: told as the CONFIG fault it is, naming where the value came from, since the command
 * line the user reads holds no such flag. Anything else is returned as it is.
 */
export function valueFault(e: unknown, commands: readonly Command[], file: string | undefined): unknown {
  if (!(e instanceof TarportError) || e.code !== 'USAGE' || e.flag === undefined) return e;
  for (const cmd of commands) {
    const opt = (cmd.options as readonly Option[]).find((o) => o.long === e.flag);
    if (!opt) continue;
    const source = cmd.getOptionValueSource(opt.attributeName());
    if (source === 'config') return new TarportError('CONFIG', `config file ${file}: key "${configKey(opt)}": ${e.message}`, { cause: e });
    if (source === 'env') return new TarportError('CONFIG', `environment variable ${opt.envVar}: ${e.message}`, { cause: e });
    return e;
  }
  return e;
}

const TRUE = new Set(['true', '1', 'yes']);
const FALSE = new Set(['false', '0', 'no']);

/** A boolean environment variable: true/false, 1/0, yes/no in any case; anything else is refused. */
export function parseEnvBoolean(name: string, value: string): boolean {
  const v = value.trim().toLowerCase();
  if (TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  throw new TarportError('CONFIG', `environment variable ${name}=${JSON.stringify(value)}: expected true or false (also 1/0, yes/no)`);
}

/**
 * Commander turns on a boolean flag for any value of its variable (`TARPORT_ALLOW_EXPIRED=false` would
 * allow an expired catalog): read those variables again, strictly, where the command line did not set
 * the flag.
 */
export function applyEnvBooleans(cmd: Command, env: NodeJS.ProcessEnv = process.env): void {
  for (const opt of cmd.options as readonly Option[]) {
    if (!opt.envVar || kindOf(opt) !== 'boolean') continue;
    const raw = env[opt.envVar];
    if (raw === undefined) continue;
    const attr = opt.attributeName();
    if (cmd.getOptionValueSource(attr) === 'cli') continue;
    const on = parseEnvBoolean(opt.envVar, raw);
    cmd.setOptionValueWithSource(attr, opt.negate ? !on : on, 'env');
  }
}
