import pino from 'pino';
import type { PollEvent } from '../consumer/index.js';
import { humanBytes } from './output.js';

/**
 * Where agent events go: with --json one JSON object per event on stdout; otherwise a line a person
 * reads on a terminal, or pino's JSON log lines on stderr when stderr is not a terminal (journald,
 * files, log shippers).
 */
export function eventPrinter(json: boolean, quiet: boolean): (e: PollEvent) => void {
  if (json) return (e) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
  if (!process.stderr.isTTY) {
    const log = pino({ base: undefined, level: quiet ? 'warn' : 'info' }, pino.destination(2));
    return (e) => {
      const level = e.kind === 'refused' || e.kind === 'poll-failed' ? 'error' : e.kind === 'warning' || (e.kind === 'hook' && !e.ok) ? 'warn' : e.kind === 'idle' ? 'debug' : 'info';
      log[level]({ event: e.kind, ...e, kind: undefined }, describe(e));
    };
  }
  return (e) => {
    if (quiet && !(e.kind === 'refused' || e.kind === 'poll-failed' || e.kind === 'warning')) return;
    if (e.kind === 'idle') return;
    process.stderr.write(describe(e) + '\n');
  };
}

export function describe(e: PollEvent): string {
  switch (e.kind) {
    case 'up-to-date':
      return `up to date ${e.ref} v${e.version}`;
    case 'loading':
      return `loading ${e.ref} v${e.version}: ${e.layers} layer(s), ${e.skipped} already in the daemon`;
    case 'loaded':
      return `loaded ${e.ref} v${e.version} as ${e.imageId.slice(0, 19)} (${humanBytes(e.bytesFetched)} fetched)`;
    case 'warning':
      return `warning: ${e.message}`;
    case 'refused':
      return `refused ${e.ref} v${e.version}: ${e.message}`;
    case 'hook':
      return e.message;
    case 'removed-image':
      return `removed ${e.imageId.slice(0, 19)}, an earlier image of ${e.ref}`;
    case 'idle':
      return 'nothing new';
    case 'poll-failed':
      return `poll failed: ${e.message}; trying again at the next interval`;
    case 'stopped':
      return 'stopped';
  }
}
