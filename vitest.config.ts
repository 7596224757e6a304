import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';
import DurationSequencer from './test/sequencer.js';

export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    setupFiles: ['test/setup.ts'],
    // integration files longest first (test/sequencer.ts)
    sequence: { sequencer: DurationSequencer },
    // vitest's default is one worker less than the cores: a single worker on a 2-core machine, which
    // would run the unit files one after another. Many of them wait on child processes and timers.
    maxWorkers: Math.max(2, availableParallelism()),
    projects: [
      {
        // no daemon, no server: files run in parallel (`npm run test:unit`)
        extends: true,
        // isolate: false: the two forks stay up and keep their module cache from file to file, where a
        // fresh process per file spent more CPU loading and transforming modules than most files test
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], sequence: { groupOrder: 0 }, isolate: false },
      },
      {
        // after the unit project has finished, files run side by side, each in a test lane of its own
        // (Docker daemons, containerd, Podman: test/integration/lane.ts); they share the servers
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          setupFiles: ['test/integration/lane.ts'],
          // a file shares the cores with the other lanes: twice the single-lane bound (an integration
          // test that ends sooner is no slower for it; one that hangs is still stopped)
          testTimeout: 240_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
