import { createServer, type Server } from 'node:http';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { PollEvent } from '../consumer/index.js';
import { TarportError } from '../errors.js';
import type { WatchEvent } from '../producer/index.js';
import { VERSION } from '../version.js';

/**
 * Prometheus metrics of the agents and the one-shot runs (text format 0.0.4), for node_exporter's
 * textfile collector (--metrics-file, written atomically) or a scrape of /metrics on loopback
 * (--metrics-listen). The agents below emit events; this module turns them into numbers: cli/ is the
 * only layer that knows output formats.
 */
export class Metrics {
  lastPoll?: number;
  lastSuccess?: number;
  published = 0;
  loaded = 0;
  readonly bytes = { up: 0, down: 0 };
  readonly failures = new Map<string, number>();
  /** The current version per name:tag: loaded (consumer) or published (producer). */
  readonly versions = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * A one-shot run (push, pull) succeeds or not as a whole (finished): a release loaded or an archive
   * published on the way says nothing of the others, so its events do not stamp a success.
   */
  oneShot = false;

  private stamp(success: boolean): void {
    const t = this.now() / 1000;
    this.lastPoll = t;
    if (success && !this.oneShot) this.lastSuccess = t;
  }

  failure(code: string): void {
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
  }

  /**
   * A poll round or a pull: what it loaded, what it found current, what failed. A round is a success
   * only when nothing in it failed (its end says so): a tag that fails every round while the others
   * are current must not keep the last success time fresh.
   */
  observePoll(e: PollEvent): void {
    switch (e.kind) {
      case 'loaded':
        this.loaded++;
        this.bytes.down += e.bytesFetched;
        this.versions.set(e.ref, e.version);
        return;
      case 'up-to-date':
        this.versions.set(e.ref, e.version);
        return;
      case 'round':
        return this.stamp(e.ok);
      case 'refused':
      case 'poll-failed':
        this.failure(e.code);
        return this.stamp(false);
      default:
        return;
    }
  }

  observeWatch(e: WatchEvent): void {
    switch (e.kind) {
      case 'published':
        for (const r of e.releases) {
          if (r.status === 'published') this.published++;
          this.versions.set(r.ref, r.version);
        }
        this.bytes.up += e.uploadedBytes;
        return this.stamp(true);
      case 'failed':
        this.failure(e.code);
        return this.stamp(false);
      case 'watching':
        return this.stamp(true);
      default:
        return;
    }
  }

  /** The end of a one-shot run (push, pull): success or not. */
  finished(ok: boolean): void {
    const t = this.now() / 1000;
    this.lastPoll = t;
    if (ok) this.lastSuccess = t;
  }

  render(): string {
    const out: string[] = [];
    const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: [string, number][]) => {
      if (samples.length === 0) return;
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) out.push(`${name}${labels} ${v}`);
    };
    metric('tarport_build_info', 'gauge', 'The tarport version that writes these metrics.', [[labels({ version: VERSION }), 1]]);
    metric('tarport_last_poll_timestamp_seconds', 'gauge', 'When the repository was last looked at (poll round, watch event or one-shot run).', this.lastPoll === undefined ? [] : [['', round(this.lastPoll)]]);
    metric('tarport_last_success_timestamp_seconds', 'gauge', 'When a poll round, a publish or a one-shot run last ended without a failure.', this.lastSuccess === undefined ? [] : [['', round(this.lastSuccess)]]);
    metric('tarport_releases_published_total', 'counter', 'Releases published (new versions).', [['', this.published]]);
    metric('tarport_releases_loaded_total', 'counter', 'Releases loaded into the container runtime.', [['', this.loaded]]);
    metric('tarport_transferred_bytes_total', 'counter', 'Bytes of objects moved: up to the repository, down from it.', [
      [labels({ direction: 'up' }), this.bytes.up],
      [labels({ direction: 'down' }), this.bytes.down],
    ]);
    metric('tarport_failures_total', 'counter', 'Failures by kind (the error code: CONNECTION, UNTRUSTED, DIGEST_MISMATCH, ...).', [...this.failures].sort().map(([k, v]) => [labels({ kind: k }), v]));
    metric('tarport_release_version', 'gauge', 'The current version of each name:tag (loaded by a consumer, published by a producer).', [...this.versions].sort().map(([ref, v]) => [labels(splitRef(ref)), v]));
    return out.join('\n') + '\n';
  }

  /**
   * Carries counters and timestamps over from the file an earlier run wrote: a cron job's counters
   * grow across runs, and a failed run keeps the last success time.
   */
  seed(text: string): void {
    for (const line of text.split('\n')) {
      const m = /^(tarport_[a-z_]+)(\{.*\})? (\S+)$/.exec(line);
      if (!m) continue;
      const [, name, rawLabels, value] = m as unknown as [string, string, string | undefined, string];
      const v = Number(value);
      if (!Number.isFinite(v)) continue;
      const l = parseLabels(rawLabels ?? '');
      if (name === 'tarport_last_poll_timestamp_seconds') this.lastPoll = v;
      else if (name === 'tarport_last_success_timestamp_seconds') this.lastSuccess = v;
      else if (name === 'tarport_releases_published_total') this.published = v;
      else if (name === 'tarport_releases_loaded_total') this.loaded = v;
      else if (name === 'tarport_transferred_bytes_total' && (l.direction === 'up' || l.direction === 'down')) this.bytes[l.direction] = v;
      else if (name === 'tarport_failures_total' && l.kind) this.failures.set(l.kind, v);
      else if (name === 'tarport_release_version' && l.name && l.tag) this.versions.set(`${l.name}:${l.tag}`, v);
    }
  }
}

const round = (t: number) => Math.round(t * 1000) / 1000;

function splitRef(ref: string): { name: string; tag: string } {
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  return colon > slash ? { name: ref.slice(0, colon), tag: ref.slice(colon + 1) } : { name: ref, tag: '' };
}

// label values escape backslash, double quote and newline (the text format's only escapes)
const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

function labels(l: Record<string, string>): string {
  return `{${Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

function parseLabels(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) out[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  return out;
}

/** Writes the file node_exporter reads: a temporary name beside it, then a rename (never half a file). */
export async function writeMetricsFile(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new TarportError('IO', `--metrics-file ${path}: ${(e as Error).message}`, { cause: e, retryable: false });
  }
}

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[?::1\]?|localhost)$/;

/** HOST:PORT on loopback: the metrics tell what a site runs, so they are not served to the network. */
export function parseListen(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const host = s.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new TarportError('USAGE', `--metrics-listen ${JSON.stringify(s)}: expected HOST:PORT, e.g. 127.0.0.1:9464`, { flag: '--metrics-listen' });
  if (!LOOPBACK.test(host)) throw new TarportError('USAGE', `--metrics-listen ${JSON.stringify(s)}: only loopback addresses (127.0.0.1, ::1, localhost); put a proxy or node_exporter's textfile collector (--metrics-file) in front for the network`, { flag: '--metrics-listen' });
  return { host, port };
}

export interface MetricsFlags {
  metricsFile?: string;
  metricsListen?: string;
}

/** Where the metrics of a run go; `update` after each event, `close` at the end. */
export interface MetricsSink {
  readonly metrics: Metrics;
  update(): Promise<void>;
  close(): Promise<void>;
}

/** Metrics as the flags ask: none, a file, a loopback server, or both. */
export async function openMetrics(flags: MetricsFlags, onError: (e: unknown) => void): Promise<MetricsSink> {
  const metrics = new Metrics();
  const file = flags.metricsFile;
  if (file) metrics.seed(await readFile(file, 'utf8').catch(() => ''));
  const server = flags.metricsListen ? await serveMetrics(parseListen(flags.metricsListen), metrics, onError) : undefined;
  // writes run one after another: two renames racing could leave the older numbers in place
  let writing: Promise<void> = Promise.resolve();
  const update = () => {
    if (!file) return Promise.resolve();
    writing = writing.then(() => writeMetricsFile(file, metrics.render())).catch(onError);
    return writing;
  };
  return {
    metrics,
    update,
    close: async () => {
      await update();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    },
  };
}

/**
 * The /metrics endpoint. Once it listens, a fault of the server (an accept that failed: out of file
 * descriptors) goes to `onError` and costs that scrape only; unheard, it would end the agent.
 */
export function serveMetrics(at: { host: string; port: number }, metrics: Metrics, onError: (e: unknown) => void): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('tarport serves /metrics only\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(metrics.render());
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new TarportError('IO', `--metrics-listen ${at.host}:${at.port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.message}`, { cause: e, retryable: false })),
    );
    server.listen(at.port, at.host, () => {
      server.on('error', (e: Error) => onError(new TarportError('IO', `--metrics-listen ${at.host}:${at.port}: a scrape was not served (${e.message})`, { cause: e })));
      // a scrape must not keep the agent alive after SIGTERM
      server.unref();
      resolve(server);
    });
  });
}
