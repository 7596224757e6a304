import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The integration files run side by side in a few lanes; the run ends when its last lane does. A
 * fresh clone has no timings of earlier runs, and vitest then starts the largest files first, by
 * bytes: a short file of long tests (repo-races.test.ts, six minutes) started late and ran on alone
 * at the end. Longest first by what they took (test/integration/durations.json: seconds, from a CI
 * run's report) keeps the lanes busy to the end. A file not listed there starts first, as vitest
 * starts files it knows nothing of.
 */
export default class DurationSequencer extends BaseSequencer {
  private readonly seconds: Record<string, number> = JSON.parse(readFileSync(new URL('./integration/durations.json', import.meta.url), 'utf8'));

  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const base = await super.sort(files);
    const weight = (f: TestSpecification) => (f.project.name === 'integration' ? (this.seconds[basename(f.moduleId)] ?? Infinity) : undefined);
    const integration = base.filter((f) => weight(f) !== undefined).sort((a, b) => weight(b)! - weight(a)!);
    return [...base.filter((f) => weight(f) === undefined), ...integration];
  }
}
