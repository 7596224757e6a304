// Run by `npm run build` after tsc: bundles dist/ into dist/bundle/, which bin/tarport.js runs.
// Why: Node loads ES modules file by file, and from dist/ a push loaded 168 of them (95 of them zod's)
// before it did any work; from the bundle, 25 (docs/install.md, "Start-up").
// Splitting keeps each command's code in chunks of its own, loaded when the command runs, as the
// dynamic imports in cli/main.ts ask. Left outside (loaded from node_modules as before): native
// modules, packages that start worker threads from files of their own (pino), and large ones that
// only some commands use and that are single files or loaded lazily already.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

// cli-progress and yaml: CommonJS (yaml's build for Node) loaded with import(), whose named exports a
// bundled chunk loses: esbuild gives such a chunk a default export only (checked below)
const external = ['zstd-napi', 'ssh2', 'cpu-features', '*.node', 'pino', 'thread-stream', 'undici', 'openpgp', 'cli-progress', 'yaml', '@aws-sdk/*', '@smithy/*'];

const root = fileURLToPath(new URL('..', import.meta.url));
// chunk names change with their content: a folder kept from an earlier build would keep dead chunks
rmSync(new URL('../dist/bundle', import.meta.url), { recursive: true, force: true });
await build({
  absWorkingDir: root,
  // the worker files are entries of their own, found beside the chunk that starts them
  // (new URL('./zstdworker.js', import.meta.url)): every output file sits in one folder
  // archive.js: the codec as the package carries it (its zstd-napi binary in native/, put there by
  // scripts/build-native), for scripts/lib/bench-codec.mjs to measure an installed package by
  entryPoints: { main: 'dist/cli/main.js', zstdworker: 'dist/archive/zstdworker.js', copyworker: 'dist/sync/copyworker.js', archive: 'dist/archive/index.js' },
  outdir: 'dist/bundle',
  chunkNames: 'chunk-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external,
  // CommonJS packages inside the bundle call require() for Node's modules; an ES module has none
  banner: { js: "import { createRequire as __tarportRequire } from 'node:module'; const require = __tarportRequire(import.meta.url);" },
  legalComments: 'none',
  logLevel: 'warning',
});

// A CommonJS package that src/ loads with import() and the bundle holds: its chunk exports only a
// default, and `(await import('x')).name` would be undefined at run time. Such a package goes into
// `external` above.
const out = join(root, 'dist/bundle');
for (const f of readdirSync(out)) {
  const text = readFileSync(join(out, f), 'utf8');
  if (/^export default require_/m.test(text)) {
    const pkg = [...text.matchAll(/^\/\/ node_modules\/((?:@[^/]+\/)?[^/]+)\//gm)].at(-1)?.[1] ?? '?';
    console.error(`bundle: dist/bundle/${f} is CommonJS loaded with import() (${pkg}): add it to external in scripts/bundle.mjs`);
    process.exit(1);
  }
}
