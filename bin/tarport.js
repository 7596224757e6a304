#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/bundle/ (built by `npm run build`, which scripts/demo and scripts/test
// run: tsc, then scripts/bundle.mjs).
import { constants } from 'node:os';
import { main } from '../dist/bundle/main.js';

let settled = false;
// Should the event loop ever run dry while a command still awaits something, say so and fail:
// exiting 0 would tell a script that work which never finished had succeeded.
process.on('exit', (code) => {
  if (!settled && code === 0) {
    process.stderr.write('tarport: internal error: the command stopped before it finished\n');
    process.exitCode = 1;
  }
});

// SIGINT and SIGTERM: the command hears them through its AbortSignal (cli/main.ts) and stops at its
// next step. Should it still be busy after HARD_EXIT_MS (a wait that does not listen), or should a
// second signal come, the process ends at once, as a crash would: the repository protocol and the
// consumer's state are made for that (nothing half-written is ever visible; the next run resumes).
// Exit code 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports it.
const HARD_EXIT_MS = 5000;
let signals = 0;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    const code = 128 + constants.signals[sig];
    if (++signals > 1) {
      process.stderr.write(`tarport: ${sig} again: exiting now; what was half done stays invisible and the next run resumes it\n`);
      process.exit(code);
    }
    setTimeout(() => {
      process.stderr.write(`tarport: still busy ${HARD_EXIT_MS / 1000} s after ${sig}: exiting now; what was half done stays invisible and the next run resumes it\n`);
      process.exit(code);
    }, HARD_EXIT_MS).unref();
  });
}

// Once the command has settled, the process ends when nothing is left to do. Should something it
// started outlive it (a credential_process that hangs: the AWS SDK runs it with no bound and cannot
// be told to stop it), the process ends all the same, EXIT_GRACE_MS later, with the command's own
// exit code: cron must not find the run still there, nor a poll start a second helper beside it.
const EXIT_GRACE_MS = 3000;
main(process.argv).then((code) => {
  settled = true;
  process.exitCode = code;
  setTimeout(() => {
    process.stderr.write(`tarport: the command ended ${EXIT_GRACE_MS / 1000} s ago, but something it started still runs (a helper process, a connection); exiting\n`);
    process.exit(code);
  }, EXIT_GRACE_MS).unref();
});
