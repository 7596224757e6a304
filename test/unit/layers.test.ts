import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers.js';

// DESIGN.md: dependencies point down the table and never up; transport, archive, crypto and runtime
// know nothing of each other. errors.ts, version.ts, lending.ts (buffer reuse), signals.ts (an operation's abort signal) and folders.ts (mkdir -p, bounded) sit below everything.
const ALLOWED: Record<string, string[]> = {
  transport: [],
  archive: [],
  crypto: [],
  runtime: [],
  repo: ['transport', 'crypto'],
  producer: ['archive', 'crypto', 'repo', 'transport'],
  consumer: ['archive', 'crypto', 'repo', 'runtime', 'transport'],
  // runtime: Docker's rule of which layers a load may leave out (chain IDs), for `sync --have`
  sync: ['crypto', 'repo', 'runtime', 'transport'],
  cli: ['transport', 'archive', 'crypto', 'repo', 'runtime', 'producer', 'consumer', 'sync'],
};

/** Files directly in src/: below every layer, so they import none. */
const BOTTOM = ['errors.ts', 'version.ts', 'lending.ts', 'signals.ts', 'folders.ts'];

/**
 * cli/ is the only place that reads the environment (and argv). Each exception is listed with its
 * reason; a new one fails this test until it moves to cli/ or is argued here.
 */
const ENV_READERS: Record<string, string> = {
  // the hook inherits the consumer's environment (as any child process would) plus TARPORT_REF/VERSION
  'consumer/hook.ts': 'process.env',
  // TODO(issue 18): the default socket should come from cli/ (DOCKER_HOST is read here when none is given)
  'runtime/docker/client.ts': 'process.env.DOCKER_HOST',
  // TODO(issue 18): sftp:// without a user takes the local user name, as ssh does; belongs in cli/
  'transport/location.ts': 'process.env.USER',
};

const src = join(ROOT, 'src');

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Relative module specifiers: static imports, `export … from`, and dynamic `import('…')`. */
function relativeImports(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/\bfrom\s+'(\.\.?\/[^']+)'|\bimport\s*\(\s*'(\.\.?\/[^']+)'\s*\)|^import\s+'(\.\.?\/[^']+)'/gm)) out.push((m[1] ?? m[2] ?? m[3])!);
  return out;
}

describe('layer boundaries', () => {
  it('every folder and file in src/ has a place in the layer table', async () => {
    const unplaced = (await readdir(src, { withFileTypes: true }))
      .filter((e) => (e.isDirectory() ? !(e.name in ALLOWED) : !BOTTOM.includes(e.name)))
      .map((e) => e.name);
    expect(unplaced).toEqual([]);
  });

  it('finds every kind of relative import', () => {
    const text = "import { a } from '../x/a.js';\nexport { b } from './b.js';\nimport type { C } from '../y/c.js';\nconst d = await import('../z/d.js');\nimport '../w/e.js';\nconst s = \"from 'nowhere'\";";
    expect(relativeImports(text)).toEqual(['../x/a.js', './b.js', '../y/c.js', '../z/d.js', '../w/e.js']);
  });

  it('every import points down the layer table', async () => {
    const violations: string[] = [];
    for (const file of await sources(src)) {
      const rel = file.slice(src.length + 1);
      const layer = rel.split('/')[0]!;
      const allowed = BOTTOM.includes(layer) ? [] : ALLOWED[layer];
      if (allowed === undefined) continue; // an unplaced folder fails the test above
      const text = await readFile(file, 'utf8');
      for (const spec of relativeImports(text)) {
        const target = join(file, '..', spec).slice(src.length + 1).split('/')[0]!;
        if (target === layer) continue;
        if (BOTTOM.includes(target.replace(/\.js$/, '.ts'))) continue; // errors.js, version.js
        if (!allowed.includes(target)) violations.push(`${rel} imports ${spec}`);
      }
    }
    expect(violations).toEqual([]);
  });

  it('only cli/ reads the environment or argv (the exceptions are listed with a reason)', async () => {
    const found: string[] = [];
    for (const file of await sources(src)) {
      const rel = file.slice(src.length + 1);
      if (rel.startsWith('cli/')) continue;
      const text = await readFile(file, 'utf8');
      for (const m of text.matchAll(/process\.(env|argv)(\.[A-Za-z_][A-Za-z0-9_]*)?/g)) {
        if (ENV_READERS[rel] !== m[0] && !(ENV_READERS[rel] === 'process.env' && m[1] === 'env')) found.push(`${rel}: ${m[0]}`);
      }
    }
    expect(found).toEqual([]);
  });
});
