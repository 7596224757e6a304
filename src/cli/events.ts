import type { PollEvent } from '../consumer/index.js';
import type { WatchEvent } from '../producer/index.js';
import { forTerminal, humanBytes, styleLine, type Level, type LineStyle, type Output } from './output.js';

/** The first line an agent logs: what runs, against what, how often, for what. */
export interface StartEvent {
  kind: 'started';
  agent: 'poll' | 'watch';
  version: string;
  repository: string;
  /** poll: time between polls; watch: the settle time. */
  interval: string;
  /** poll: NAME[:TAG] followed (empty: everything); watch: the folder. */
  subscriptions: string[];
}

export function describeStart(e: StartEvent): string {
  const what = e.agent === 'poll' ? `following ${e.subscriptions.length ? e.subscriptions.join(', ') : 'everything'}` : `watching ${e.subscriptions.join(', ')}`;
  return `tarport ${e.version} ${e.agent} started: repository ${e.repository}, ${e.agent === 'poll' ? 'every' : 'settle'} ${e.interval}, ${what}`;
}

/**
 * Where agent events go: with --json one JSON object per event on stdout (a line each); on a
 * terminal a line a person reads; under systemd the same line with its journald priority; elsewhere
 * (files, log shippers) pino's JSON lines with the level's name and an ISO time.
 */
export async function eventPrinter<E extends { kind: string }>(out: Output, text: (e: E) => string, levelOf: (e: E) => Level): Promise<(e: E | StartEvent) => void> {
  const textOf = (e: E | StartEvent) => (e.kind === 'started' ? describeStart(e as StartEvent) : text(e as E));
  const levelOfAny = (e: E | StartEvent): Level => (e.kind === 'started' ? 'info' : levelOf(e as E));
  if (out.json) return (e) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
  if (out.style === 'timestamped') {
    const { default: pino } = await import('pino');
    const log = pino(
      { base: undefined, level: out.quiet ? 'warn' : 'info', timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
      pino.destination({ fd: 2, sync: true }),
    );
    return (e) => log[levelOfAny(e)]({ event: e.kind, ...e, kind: undefined } as Record<string, unknown>, textOf(e));
  }
  return (e) => {
    const level = levelOfAny(e);
    if (level === 'debug' || (out.quiet && level === 'info')) return;
    process.stderr.write(styleLine(out.style as LineStyle, level, forTerminal(textOf(e))));
  };
}

export function pollLevel(e: PollEvent): Level {
  if (e.kind === 'refused' || e.kind === 'poll-failed') return 'error';
  if (e.kind === 'warning' || e.kind === 'retrying' || e.kind === 'skipping' || (e.kind === 'hook' && !e.ok)) return 'warn';
  // a read-only location (a web mirror) never takes an acknowledgement: not worth a line per poll
  return e.kind === 'idle' || e.kind === 'round' || (e.kind === 'ack' && e.readOnly) ? 'debug' : 'info';
}

export function describe(e: PollEvent): string {
  switch (e.kind) {
    case 'up-to-date':
      return `up to date ${e.ref} v${e.version}`;
    case 'loading':
      return `loading ${e.ref} v${e.version}: ${e.layers} layer(s), ${e.skipped} already in the daemon`;
    case 'loaded':
      return `loaded ${e.ref} v${e.version} as ${e.imageId.slice(0, 19)} into ${e.runtime} (${e.platform}) (${humanBytes(e.bytesFetched)} fetched${e.signer ? `, signed by ${e.signer}` : ''})${e.via ? `: ${e.via}` : ''}`;
    case 'fetched':
      return `fetched ${e.ref} v${e.version} into the cache: ${e.objects} object(s), ${humanBytes(e.bytesFetched)} fetched; not loaded (--fetch-only)`;
    case 'warning':
      return `warning: ${e.message}`;
    case 'refused':
      return `refused ${e.ref} v${e.version}: ${e.message}`;
    case 'hook':
      return e.message;
    case 'removed-image':
      return `removed ${e.imageId.slice(0, 19)}, an earlier image of ${e.ref}`;
    case 'ack':
      return e.message;
    case 'idle':
      return 'nothing new';
    case 'empty':
      return e.message;
    case 'poll-failed':
      return `poll failed: ${e.message}; trying again in ${e.retryInMs / 1000} s`;
    case 'skipping':
      return `skipping ${e.ref} (${e.code}): refused for integrity or trust; tried again when the catalog offers another record for it`;
    case 'retrying':
      return `retrying ${e.ref} in ${e.retryInMs / 1000} s: ${e.message} (${e.code}: transient, not skipped)`;
    case 'round':
      return e.ok ? 'round done' : 'round done, with a failure';
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
    case 'left':
      return `${e.file}: left for the next run: ${e.reason}`;
    case 'publishing':
      return `${e.file}: publishing`;
    case 'retrying':
      return `${e.file}: ${e.message}; trying again in ${Math.round(e.inMs / 1000)} s`;
    case 'warning':
      return `${e.file}: ${e.message}`;
    case 'watching':
      return `watching ${e.dir}`;
    case 'stopped':
      return 'stopped';
  }
}

export function watchLevel(e: WatchEvent): Level {
  if (e.kind === 'failed') return 'error';
  if (e.kind === 'retrying' || e.kind === 'left' || e.kind === 'warning') return 'warn';
  return e.kind === 'waiting' ? 'debug' : 'info';
}
