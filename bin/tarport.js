#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, which scripts/demo and scripts/test run).
import { main } from '../dist/cli/main.js';
main(process.argv).then((code) => { process.exitCode = code; });
