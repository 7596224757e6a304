// A child process for test/unit/state.test.ts: in each lock folder it is given (all of them at the
// same time, one trial each), takes the consumer lock ROUNDS times; while it holds it, a marker that
// only one holder may own must be free (created with 'wx'). Some rounds "crash" while holding: the
// lock is left naming a dead process, which the others must take over. One process serves every
// trial, since a process start (Node and the modules) costs more CPU than all its rounds.
import { open, rm, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { takeLock } from '../dist/consumer/state.js';

const [dirList, rounds, deadPid, crashEvery] = process.argv.slice(2);

async function trial(dir) {
  const lock = join(dir, 'lock');
  let overlaps = 0;
  let held = 0;
  for (let i = 0; i < Number(rounds); i++) {
    const release = await takeLock(lock, 60_000);
    let fh;
    try {
      fh = await open(join(dir, 'inside'), 'wx');
    } catch {
      overlaps++;
    }
    held++;
    await new Promise((r) => setTimeout(r, 2 + Math.random() * 5));
    if (fh) {
      await fh.close();
      await rm(join(dir, 'inside'));
    }
    if (i % Number(crashEvery) === Number(crashEvery) - 1) {
      // as a crash would leave it: a complete lock file naming a process that is gone
      await writeFile(join(dir, `crash-${process.pid}`), `${deadPid}\n`);
      await rename(join(dir, `crash-${process.pid}`), lock);
    } else await release();
  }
  return { overlaps, held };
}

// DIRS is a list separated by newlines; one result per folder, in the same order
const results = await Promise.all(dirList.split('\n').map(trial));
process.stdout.write(JSON.stringify(results) + '\n');
