import { basename } from 'node:path';
import { readFile } from 'node:fs/promises';
import { TarportError } from '../errors.js';
import { parseRef, type ImageRef } from '../repo/index.js';

/**
 * An archive that names no image (a docker export, or an image saved by ID): bad input that the
 * agent's user fixes by naming the file, which is the advice it gets.
 */
export class UnnamedArchiveError extends TarportError {
  constructor(message: string) {
    super('BAD_INPUT', message);
  }
}

/** One rule of a file-name mapping: `app-{version}.tar=app:{version}`. */
export interface NameRule {
  readonly pattern: RegExp;
  readonly target: string;
  readonly source: string;
}

/** Parses `PATTERN=NAME:TAG`, where `{word}` in PATTERN matches any text and is used in NAME:TAG. */
export function parseNameRule(rule: string): NameRule {
  const eq = rule.indexOf('=');
  if (eq <= 0 || eq === rule.length - 1) throw new TarportError('USAGE', `--name-map ${JSON.stringify(rule)}: write FILE-PATTERN=NAME:TAG, e.g. app-{version}.tar=app:{version}`);
  const [pat, target] = [rule.slice(0, eq), rule.slice(eq + 1)];
  const vars = new Set<string>();
  const re = pat
    .split(/(\{[a-zA-Z_][a-zA-Z0-9_]*\})/)
    .map((part) => {
      const m = /^\{([a-zA-Z_][a-zA-Z0-9_]*)\}$/.exec(part);
      if (!m) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      vars.add(m[1]!);
      return `(?<${m[1]}>.+?)`;
    })
    .join('');
  for (const m of target.matchAll(/\{([^}]*)\}/g)) {
    if (!vars.has(m[1]!)) throw new TarportError('USAGE', `--name-map ${JSON.stringify(rule)}: {${m[1]}} is not in the file pattern`);
  }
  return { pattern: new RegExp(`^${re}$`), target, source: rule };
}

/**
 * The name:tag for a file: a sidecar `<file>.name` holding NAME:TAG wins, then the first rule that
 * matches the file name; undefined means "the archive's own tags".
 */
export async function nameFor(file: string, rules: readonly NameRule[]): Promise<ImageRef | undefined> {
  const sidecar = await readFile(`${file}.name`, 'utf8').catch(() => undefined);
  if (sidecar !== undefined) {
    const text = sidecar.trim();
    try {
      return parseRef(text, { defaultTag: 'latest' });
    } catch (e) {
      throw new TarportError('BAD_INPUT', `${file}.name: ${(e as Error).message}`);
    }
  }
  const name = basename(file);
  for (const r of rules) {
    const m = r.pattern.exec(name);
    if (!m) continue;
    const ref = r.target.replace(/\{([^}]*)\}/g, (_, v: string) => m.groups?.[v] ?? '');
    try {
      return parseRef(ref, { defaultTag: 'latest' });
    } catch (e) {
      throw new TarportError('BAD_INPUT', `${file}: --name-map ${r.source} gives ${JSON.stringify(ref)}: ${(e as Error).message}`);
    }
  }
  return undefined;
}
