import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../../helpers.js';

// Issue 18: nothing outside repo/ touches a repository's transport. Repository keeps its Store to
// itself, and index.ts does not export Store: a module above repo/ that imports anything of repo/
// but its index could reach around that.

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('repo/ boundary', () => {
  it('modules outside repo/ import repo/ only through its index', async () => {
    const src = join(ROOT, 'src');
    const reaching: string[] = [];
    for (const file of await sources(src)) {
      if (file.startsWith(join(src, 'repo') + '/')) continue;
      const text = await readFile(file, 'utf8');
      for (const m of text.matchAll(/from '([^']*\/repo\/[^']+)'/g)) if (!m[1]!.endsWith('/repo/index.js')) reaching.push(`${file.slice(src.length + 1)} imports ${m[1]}`);
    }
    expect(reaching).toEqual([]);
  });

  it('index.ts does not hand out the Store', async () => {
    const index = await readFile(join(ROOT, 'src/repo/index.ts'), 'utf8');
    expect(index).not.toMatch(/store\.js|storeOf/);
  });
});
