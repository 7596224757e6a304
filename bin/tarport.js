#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, which scripts/demo and scripts/test run).
import { main } from '../dist/cli/main.js';

let settled = false;
// Should the event loop ever run dry while a command still awaits something, say so and fail:
// exiting 0 would tell a script that work which never finished had succeeded.
process.on('exit', (code) => {
  if (!settled && code === 0) {
    process.stderr.write('tarport: internal error: the command stopped before it finished\n');
    process.exitCode = 1;
  }
});
main(process.argv).then((code) => {
  settled = true;
  process.exitCode = code;
});
