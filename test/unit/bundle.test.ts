import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, tarport, tempDir } from '../helpers.js';

// bin/tarport.js runs dist/bundle/ (scripts/bundle.mjs). The in-process tests run dist/ as tsc wrote
// it; these run the bundle itself, where what src/ loads lazily (the config parsers) could come out
// other than from node_modules, and where the worker threads must find their files.
describe('the bundle bin/tarport.js runs', () => {
  it('reads YAML and TOML config files (parsers loaded on demand) and names a bad key', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'c.yaml'), 'json: true\n');
    await writeFile(join(dir, 'c.toml'), 'json = true\n');
    await writeFile(join(dir, 'bad.yml'), 'jsn: true\n');
    const missing = join(dir, 'no-repo');
    for (const cfg of ['c.yaml', 'c.toml']) {
      const r = await tarport(['ls', missing, '--config', join(dir, cfg)]);
      // --json from the file: the refusal is one JSON document on stdout
      expect(JSON.parse(r.stdout), cfg).toHaveProperty('error');
    }
    const bad = await tarport(['ls', missing, '--config', join(dir, 'bad.yml')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`config file ${join(dir, 'bad.yml')}: unknown key "jsn"`);
  });

  it('holds the worker threads beside the chunks that start them', async () => {
    const files = await readdir(join(ROOT, 'dist/bundle'));
    expect(files).toEqual(expect.arrayContaining(['main.js', 'zstdworker.js', 'copyworker.js']));
  });

  it('holds of zod only what src/ uses: its English messages, none of its other locales', async () => {
    // `import { z } from 'zod'` kept all of zod (755 KB that every command parsed at start-up);
    // `import * as z` lets esbuild leave out what no schema uses (docs/install.md, Start-up)
    const dir = join(ROOT, 'dist/bundle');
    const locales: string[] = [];
    for (const f of (await readdir(dir)).filter((f) => f.endsWith('.js'))) {
      for (const m of (await readFile(join(dir, f), 'utf8')).matchAll(/^\/\/ node_modules\/zod\/v4\/locales\/([^ \n]+)$/gm)) locales.push(m[1]!);
    }
    expect(locales).toEqual(['en.js']);
  });
});
