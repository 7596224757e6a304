import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * `mkdir -p`, one level at a time. Not `mkdir(dir, { recursive: true })`: Node 20's spins for ever
 * where a parent refuses every new entry with ENOENT (a path under /proc, as a typo in --state can
 * give), so an unattended run hung at full CPU with no line said. Resolves with nothing once `dir`
 * is a folder; rejects with the system error of the level that failed.
 */
export async function makeFolders(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    try {
      await mkdir(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') break;
      // the parent is missing too: made first, then this one (each once: no loop)
      if (code === 'ENOENT' && dirname(d) !== d) {
        missing.push(d);
        continue;
      }
      throw e;
    }
    break;
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}
