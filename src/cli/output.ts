import { TarportError, type ErrorCode } from '../errors.js';
import { maskLocationString } from '../transport/index.js';

/**
 * Names read from a repository (folders, tags, messages quoting them) reach the terminal: control
 * characters in them (escape sequences that move the cursor, retitle the window, or hide text) are
 * shown as \xNN instead of acting. Newlines and tabs of tarport's own messages stay.
 */
export function forTerminal(s: string): string {
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Exit codes (CLI.md). */
export const EXIT = { ok: 0, failed: 1, usage: 2, trust: 3 } as const;

export function exitCodeOf(code: ErrorCode): number {
  switch (code) {
    case 'USAGE':
    case 'CONFIG':
    case 'BAD_INPUT':
      return EXIT.usage;
    case 'DIGEST_MISMATCH':
    case 'INTEGRITY':
    case 'UNTRUSTED':
    case 'ROLLBACK':
    case 'EXPIRED':
      return EXIT.trust;
    default:
      return EXIT.failed;
  }
}

/** Human output goes to stderr; `--json` output is one document on stdout (CLI.md). */
export class Output {
  constructor(
    readonly json: boolean,
    readonly quiet = false,
  ) {}

  info(line: string): void {
    if (!this.quiet) process.stderr.write(forTerminal(line) + '\n');
  }

  warn(line: string): void {
    process.stderr.write(`tarport: warning: ${forTerminal(line)}\n`);
  }

  document(doc: unknown): void {
    if (this.json) process.stdout.write(JSON.stringify(doc) + '\n');
  }

  /** Prints an error and returns the exit code. */
  error(e: unknown): number {
    const err =
      e instanceof TarportError
        ? e
        : new TarportError('INTERNAL', `internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    const message = maskLocationString(err.message);
    process.stderr.write(`tarport: error: ${forTerminal(message)}\n`);
    if (this.json) process.stdout.write(JSON.stringify({ error: { code: err.code, message } }) + '\n');
    return exitCodeOf(err.code);
  }
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n');
}
