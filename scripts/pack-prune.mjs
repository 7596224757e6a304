// Run by `npm pack` (prepack) before it bundles the dependencies into the tarball. ssh2's optional
// helper cpu-features (and its build checker) compiles at install time, and a bundled copy that fails
// to compile fails the whole install on a host without a compiler. ssh2 runs without it (it only picks
// a cipher order), so the tarball leaves it out; `npm ci` puts it back for development.
import { rmSync } from 'node:fs';

for (const dep of ['cpu-features', 'buildcheck']) {
  rmSync(new URL(`../node_modules/${dep}`, import.meta.url), { recursive: true, force: true });
  process.stderr.write(`pack: left out node_modules/${dep} (ssh2 runs without it; it needs a compiler to install)\n`);
}
