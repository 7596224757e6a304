// Loaded into the CLI under test (NODE_OPTIONS=--import): writes the process's peak RSS (VmHWM,
// worker threads included) to $TARPORT_TEST_PROBE when it exits, so a test can bound memory without
// a tool. Not resourceUsage().maxRSS: Linux carries that over exec from the parent (the test runner).
import { readFileSync, writeFileSync } from 'node:fs';

const out = process.env.TARPORT_TEST_PROBE;
if (out) {
  process.on('exit', () => {
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    writeFileSync(out, JSON.stringify({ maxRssKiB: Number(hwm?.[1] ?? -1) }));
  });
}
