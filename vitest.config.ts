import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';
import DurationSequencer from './test/sequencer.js';

const unitThreads = Number(process.env.VITEST_MAX_THREADS) || 2 * Math.max(2, availableParallelism());

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
    // Whether a pool's workers are reused from file to file is read from this root level only (vitest
    // 3 ignores it in a project), and the integration files need fresh processes (a test lane's
    // variables are written into process.env): so the unit project has the threads pool to itself,
    // with its workers reused, and the integration project keeps isolated forks. A fresh process per
    // unit file spent half the project's CPU starting Node, vitest and the modules again.
    // Twice as many unit threads as cores: many unit files wait on timers and child processes, and
    // the project's wall time halves (60 s to under 40 s on 2 cores). minThreads as many: tinypool ends
    // threads idle above its minimum, and one ended with a task's teardown pending failed the run
    // ("Terminating worker thread").
    // VITEST_MAX_THREADS still sets the number (both bounds, so they never conflict).
    poolOptions: { threads: { isolate: false, maxThreads: unitThreads, minThreads: unitThreads } },
    projects: [
      {
        // no daemon, no server: files run in parallel (`npm run test:unit`), on worker threads of one
        // process that keep their module cache from file to file. What needs a process of its own
        // (its resident memory, signals, the launcher) spawns one (test/helpers.ts: zstdMemory,
        // tarport); a helper module's state outlives a file (test/unit/repo/fixtures.ts)
        extends: true,
        test: { name: 'unit', pool: 'threads', include: ['test/unit/**/*.test.ts'], sequence: { groupOrder: 0 }, isolate: false },
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
