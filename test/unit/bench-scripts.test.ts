// scripts/*.mjs and scripts/lib/*.mjs: what they import from the build (dist/) is exported by the
// sources it is built from. The bench runs for an hour before its later parts start: a part that
// imported a module moved since (scripts/lib/bench-idle.mjs did) would stop it there.
import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');

interface DistImport {
  script: string;
  module: string;
  names: string[];
}

/** `import { a, b as c } from '…/dist/m.js'` and `await import(join(ROOT, 'dist/m.js'))` followed by `{ a } =`. */
function distImports(script: string, text: string): DistImport[] {
  const out: DistImport[] = [];
  for (const m of text.matchAll(/import\s*\{([^{}]*)\}\s*from\s*'((?:\.\.\/)+dist\/[^']+)'/g)) {
    out.push({ script, module: m[2]!.replace(/^(\.\.\/)+/, ''), names: m[1]!.split(',').map((n) => n.trim().split(/\s+as\s+/)[0]!).filter(Boolean) });
  }
  for (const m of text.matchAll(/\{([^{}]*)\}\s*=\s*await import\(join\(ROOT, '(dist\/[^']+)'\)\)/g)) {
    out.push({ script, module: m[2]!, names: m[1]!.split(',').map((n) => n.trim().split(/\s*:\s*/)[0]!).filter(Boolean) });
  }
  for (const m of text.matchAll(/await import\(join\(ROOT, '(dist\/[^']+)'\)\)/g)) out.push({ script, module: m[1]!, names: [] });
  return out;
}

async function scriptImports(): Promise<DistImport[]> {
  const out: DistImport[] = [];
  for (const dir of ['scripts', 'scripts/lib']) {
    for (const f of (await readdir(join(ROOT, dir))).filter((f) => f.endsWith('.mjs'))) {
      out.push(...distImports(join(dir, f), await readFile(join(ROOT, dir, f), 'utf8')));
    }
  }
  return out;
}

/** dist/x/y.js is built from src/x/y.ts; the bundle (dist/bundle/) is not a module of src. */
const sourceOf = (module: string) => join(ROOT, module.replace(/^dist\//, 'src/').replace(/\.js$/, '.ts'));

describe('the bench scripts import what the sources export', () => {
  it('finds the imports of a script, named and dynamic', () => {
    const text = "import { a, b as c } from '../../dist/x/index.js';\nconst { d, e: f } = await import(join(ROOT, 'dist/y/z.js'));";
    expect(distImports('s.mjs', text)).toEqual([
      { script: 's.mjs', module: 'dist/x/index.js', names: ['a', 'b'] },
      { script: 's.mjs', module: 'dist/y/z.js', names: ['d', 'e'] },
      { script: 's.mjs', module: 'dist/y/z.js', names: [] },
    ]);
  });

  it('every module a script imports from dist/ has its source, which exports each name', async () => {
    const imports = (await scriptImports()).filter((i) => !i.module.startsWith('dist/bundle/'));
    // the bench's crypto, idle, transfer, S3 and codec parts at least
    expect(imports.length).toBeGreaterThanOrEqual(10);
    for (const i of imports) {
      const src = sourceOf(i.module);
      expect(existsSync(src), `${i.script} imports ${i.module}: there is no ${relative(ROOT, src)}`).toBe(true);
      const exported = (await import(src)) as Record<string, unknown>;
      for (const n of i.names) expect(exported[n], `${i.script} imports ${n} from ${i.module}, which does not export it`).toBeDefined();
    }
  });
});
