import type { PollEvent } from '../consumer/index.js';
import type { WatchEvent } from '../producer/index.js';
import { forTerminal, humanBytes } from './output.js';

type Level = 'debug' | 'info' | 'warn' | 'error';

/**
 * Where agent events go: with --json one JSON object per event on stdout; otherwise a line a person
 * reads on a terminal, or pino's JSON log lines on stderr when stderr is not a terminal (journald,
 * files, log shippers).
 */
export async function eventPrinter<E extends { kind: string }>(json: boolean, quiet: boolean, text: (e: E) => string, levelOf: (e: E) => Level): Promise<(e: E) => void> {
  if (json) return (e) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
  if (!process.stderr.isTTY) {
    const { default: pino } = await import('pino');
    const log = pino({ base: undefined, level: quiet ? 'warn' : 'info' }, pino.destination(2));
    return (e) => log[levelOf(e)]({ event: e.kind, ...e, kind: undefined } as Record<string, unknown>, text(e));
  }
  return (e) => {
    const level = levelOf(e);
    if (level === 'debug' || (quiet && level === 'info')) return;
    process.stderr.write(forTerminal(text(e)) + '\n');
  };
}

export function pollLevel(e: PollEvent): Level {
  if (e.kind === 'refused' || e.kind === 'poll-failed') return 'error';
  if (e.kind === 'warning' || e.kind === 'retrying' || e.kind === 'skipping' || (e.kind === 'hook' && !e.ok)) return 'warn';
  return e.kind === 'idle' ? 'debug' : 'info';
}

export function describe(e: PollEvent): string {
  switch (e.kind) {
    case 'up-to-date':
      return `up to date ${e.ref} v${e.version}`;
    case 'loading':
      return `loading ${e.ref} v${e.version}: ${e.layers} layer(s), ${e.skipped} already in the daemon`;
    case 'loaded':
      return `loaded ${e.ref} v${e.version} as ${e.imageId.slice(0, 19)} (${humanBytes(e.bytesFetched)} fetched${e.signer ? `, signed by ${e.signer}` : ''})`;
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
      return `poll failed: ${e.message}; trying again in ${e.retryInMs / 1000} s`;
    case 'skipping':
      return `skipping ${e.ref} (${e.code}): refused for integrity or trust; tried again when the catalog offers another record for it`;
    case 'retrying':
      return `retrying ${e.ref} in ${e.retryInMs / 1000} s: ${e.message} (${e.code}: transient, not skipped)`;
    case 'stopped':
      return 'stopped';
  }
}

export function describeWatch(e: WatchEvent): string {
  switch (e.kind) {
    case 'published':
      return `${e.file}: ${e.releases.map((r) => `${r.status} ${r.ref} v${r.version}`).join(', ')} (${humanBytes(e.uploadedBytes)} uploaded); moved to done/`;
    case 'failed':
      return `${e.file}: failed: ${e.message}`;
    case 'waiting':
      return `${e.file}: waiting (${e.reason})`;
    case 'publishing':
      return `${e.file}: publishing`;
    case 'retrying':
      return `${e.file}: ${e.message}; trying again in ${Math.round(e.inMs / 1000)} s`;
    case 'watching':
      return `watching ${e.dir}`;
    case 'stopped':
      return 'stopped';
  }
}

export function watchLevel(e: WatchEvent): Level {
  if (e.kind === 'failed') return 'error';
  if (e.kind === 'retrying') return 'warn';
  return e.kind === 'waiting' ? 'debug' : 'info';
}
