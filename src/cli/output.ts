import { fstatSync } from 'node:fs';
import { TarportError, type ErrorCode } from '../errors.js';
import { maskLocationString } from '../transport/index.js';

export type Level = 'debug' | 'info' | 'warn' | 'error';

/**
 * How stderr lines look: as they are on a terminal; with journald priority prefixes under systemd
 * (`journalctl -p err` finds the errors; journald adds the time); with an ISO time in front
 * anywhere else (cron mail, log files), where nothing else records when a line was written.
 */
export type LineStyle = 'terminal' | 'journal' | 'timestamped';

/**
 * systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to the journal
 * (sd-daemon(3)): the prefixes are used only when stderr still is that stream, not when the service
 * redirected it to a file.
 */
export function lineStyle(env: NodeJS.ProcessEnv = process.env, fd = 2): LineStyle {
  const js = env.JOURNAL_STREAM;
  if (js) {
    try {
      const st = fstatSync(fd);
      if (js === `${st.dev}:${st.ino}`) return 'journal';
    } catch {
      // no stderr to look at: not the journal
    }
  }
  return process.stderr.isTTY && fd === 2 ? 'terminal' : 'timestamped';
}

/** sd-daemon(3) priorities: <3> error, <4> warning, <6> info, <7> debug. */
const PRIORITY: Record<Level, number> = { error: 3, warn: 4, info: 6, debug: 7 };

/** A message as stderr gets it in this style; every line of a multi-line message is marked. */
export function styleLine(style: LineStyle, level: Level, text: string, now = new Date()): string {
  if (style === 'terminal') return text + '\n';
  const prefix = style === 'journal' ? `<${PRIORITY[level]}>` : `${now.toISOString()} `;
  return text.split('\n').map((l) => prefix + l + '\n').join('');
}

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
    case 'PLATFORM':
    case 'NO_REPOSITORY':
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

/** A failure as the one JSON document shows it, beside what succeeded. */
export interface ErrorDocument {
  code: ErrorCode;
  message: string;
}

/** Any thrown value as a TarportError: our own bugs say "internal error". */
export function asTarportError(e: unknown): TarportError {
  return e instanceof TarportError ? e : new TarportError('INTERNAL', `internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
}

/**
 * Data goes to stdout (tables, the log of a tag, the `--json` document); messages go to stderr
 * (CLI.md). With `--json`, stdout carries exactly one document per run, whatever happens: what
 * succeeded and what failed side by side, or the error alone when nothing ran.
 */
export class Output {
  private documented = false;

  constructor(
    readonly json: boolean,
    readonly quiet = false,
    readonly style: LineStyle = lineStyle(),
  ) {}

  /** A message on stderr, marked as its style asks. */
  line(level: Level, text: string): void {
    if (this.quiet && (level === 'info' || level === 'debug')) return;
    process.stderr.write(styleLine(this.style, level, forTerminal(text)));
  }

  info(line: string): void {
    this.line('info', line);
  }

  warn(line: string): void {
    this.line('warn', `tarport: warning: ${line}`);
  }

  /** Data a script reads (an ls table): stdout, whatever --quiet says; not printed under --json. */
  data(text: string): void {
    if (!this.json) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }

  /** The run's one JSON document (with --json); a second one is a bug in the command. */
  document(doc: unknown): void {
    if (!this.json) return;
    if (this.documented) throw new TarportError('INTERNAL', 'internal error: a second JSON document in one run');
    this.documented = true;
    process.stdout.write(JSON.stringify(doc) + '\n');
  }

  /**
   * Reports one failure on stderr (one of several: the command goes on) and returns its exit code and
   * its entry for the JSON document.
   */
  failure(e: unknown): { exitCode: number; error: ErrorDocument } {
    const err = asTarportError(e);
    const message = maskLocationString(err.message);
    this.line('error', `tarport: error: ${message}`);
    return { exitCode: exitCodeOf(err.code), error: { code: err.code, message } };
  }

  /**
   * What the run did so far, to go beside the error in the document if one ends it (a SIGTERM, a
   * state file that cannot be written): a script still learns what was done. The command keeps the
   * object up to date as it works.
   */
  doneSoFar(doc: object): void {
    this.partial = doc;
  }

  private partial: object | undefined;

  /** Prints the error that ended the run and returns the exit code; the JSON document, if none was printed yet. */
  error(e: unknown): number {
    const { exitCode, error } = this.failure(e);
    if (this.json && !this.documented) this.document({ ...this.partial, error });
    return exitCode;
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
