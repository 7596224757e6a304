import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers.js';

// test/sequencer.ts starts the integration files longest first by test/integration/durations.json;
// a file missing there starts first and one listed but gone is a stale entry: both are kept out.
describe('test/integration/durations.json', () => {
  it('names every integration file, and only those, each with a duration in seconds', async () => {
    const files = (await readdir(join(ROOT, 'test/integration'))).filter((f) => f.endsWith('.test.ts')).sort();
    const seconds = JSON.parse(await readFile(join(ROOT, 'test/integration/durations.json'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(seconds).sort()).toEqual(files);
    for (const [file, s] of Object.entries(seconds)) expect(typeof s === 'number' && s > 0, file).toBe(true);
  });
});
