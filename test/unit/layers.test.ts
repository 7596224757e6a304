import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers.js';

// DESIGN.md: dependencies point down the table and never up; transport, archive, crypto and runtime
// know nothing of each other. errors.ts and version.ts sit below everything.
const ALLOWED: Record<string, string[]> = {
  transport: [],
  archive: [],
  crypto: [],
  runtime: [],
  repo: ['transport', 'crypto'],
  producer: ['archive', 'crypto', 'repo', 'transport'],
  consumer: ['archive', 'crypto', 'repo', 'runtime', 'transport'],
  sync: ['crypto', 'repo', 'transport'],
  cli: ['transport', 'archive', 'crypto', 'repo', 'runtime', 'producer', 'consumer', 'sync'],
};

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('layer boundaries', () => {
  it('every import points down the layer table', async () => {
    const src = join(ROOT, 'src');
    const violations: string[] = [];
    for (const file of await sources(src)) {
      const layer = file.slice(src.length + 1).split('/')[0]!;
      if (!(layer in ALLOWED)) continue;
      const text = await readFile(file, 'utf8');
      for (const m of text.matchAll(/from '(\.\.?\/[^']+)'/g)) {
        const target = join(file, '..', m[1]!).slice(src.length + 1).split('/')[0]!;
        if (target === layer || target.endsWith('.js')) continue; // same layer, or errors.js / version.js
        if (!ALLOWED[layer]!.includes(target)) violations.push(`${file.slice(src.length + 1)} imports ${m[1]}`);
      }
    }
    expect(violations).toEqual([]);
  });
});
