import type { LayerDescriptor, Repository } from '../repo/index.js';
import { withSignal } from '../signals.js';
import type { Download, ObjectCache } from './cache.js';

/** A fetch asked for and not begun: its place in the load archive, and how to begin it. */
interface Waiting {
  readonly place: number;
  readonly begin: () => Promise<number>;
  readonly settle: (fetched: Promise<number>) => void;
}

/**
 * The downloads of one load's layers into the cache, one at a time, each followed by its reader
 * (Download); the bytes they read add up in `done`. The next to begin is the earliest in the load
 * archive of those asked for: a runtime that pulls (Podman) asks for several layers at once, in any
 * order, and applies them in the archive's; the first must not wait behind a later one's download.
 * So a fetch asked for while none runs waits `gatherMs` for the requests that come with it. A
 * failed fetch fails those waiting and any asked for later, without beginning them, and is kept
 * for stop() (not the abort stop() causes itself); after stop() nothing begins.
 */
export class FetchChain {
  private readonly waiting: Waiting[] = [];
  private readonly started: Promise<number>[] = [];
  private readonly downloads: Download[] = [];
  private readonly stopper = new AbortController();
  // the caller's signal (the agent's, alive for months): each fetch follows it only while it runs
  private readonly outer: AbortSignal | undefined;
  private busy = false;
  private gathering: NodeJS.Timeout | undefined;
  private broken: { fault: unknown } | undefined;
  private fault: unknown;
  private counted = 0;

  /** `gatherMs`: how long a fetch asked for while none runs waits for others asked for with it (0: none). */
  constructor(
    private readonly repo: Repository,
    private readonly cache: ObjectCache,
    signal?: AbortSignal,
    private readonly gatherMs = 0,
  ) {
    this.outer = signal;
  }

  /** A download of the layer's object, for a reader to follow once its fetch starts. */
  follow(l: LayerDescriptor): Download {
    const d = this.cache.follow(l);
    this.downloads.push(d);
    return d;
  }

  /**
   * Fetches the object once no other fetch runs and none asked for lies earlier (`place`: its
   * place in the load archive); resolves with the bytes it read.
   */
  start(l: LayerDescriptor, download: Download, place: number): Promise<number> {
    let settle!: (fetched: Promise<number>) => void;
    const fetched = new Promise<number>((resolve) => (settle = resolve));
    // async: a throw of ensure's becomes this fetch's fault, never a chain stuck busy
    this.waiting.push({ place, begin: async () => withSignal([this.outer, this.stopper.signal], (s) => this.cache.ensure(this.repo, l, s, download)), settle });
    // a fetch that never began (an earlier one failed) ends its download too: no reader waits on it
    fetched.then(
      () => download.end(),
      (e: unknown) => download.end(e),
    );
    // a failed fetch is reported where its file opens, and by stop(): never unhandled
    fetched.catch((e: unknown) => {
      if (!this.stopper.signal.aborted) this.fault ??= e;
    });
    this.started.push(fetched);
    if (this.busy || this.gathering || this.gatherMs === 0) this.next();
    else this.gathering = setTimeout(() => ((this.gathering = undefined), this.next()), this.gatherMs);
    return fetched;
  }

  /** Bytes read without a fetch (an object read in place), counted with the fetches'. */
  count(bytes: number): void {
    this.counted += bytes;
  }

  /** The bytes read, once every fetch started so far ended; rejects with the first fault. */
  get done(): Promise<number> {
    return Promise.all(this.started).then((ns) => ns.reduce((a, n) => a + n, this.counted));
  }

  /** Stops the fetches still running and waits for them; the first fault of a fetch, if one failed. */
  async stop(): Promise<unknown> {
    this.stopper.abort();
    clearTimeout(this.gathering);
    this.gathering = undefined;
    this.next();
    await Promise.allSettled(this.started);
    return this.fault;
  }

  /** Bytes the downloads have written into the cache so far. */
  written(): number {
    return this.downloads.reduce((n, d) => n + d.written, 0);
  }

  /** Begins the earliest fetch waiting, unless one runs; after a failure or stop(), fails every one waiting. */
  private next(): void {
    while (!this.busy && !this.gathering && this.waiting.length > 0) {
      const i = this.waiting.reduce((best, w, k) => (w.place < this.waiting[best]!.place ? k : best), 0);
      const w = this.waiting.splice(i, 1)[0]!;
      const aborted = [this.outer, this.stopper.signal].find((s) => s?.aborted);
      if (this.broken || aborted) {
        w.settle(Promise.reject(this.broken?.fault ?? aborted!.reason));
        continue;
      }
      this.busy = true;
      const fetched = w.begin();
      w.settle(fetched);
      fetched.then(
        () => undefined,
        (e: unknown) => (this.broken ??= { fault: e }),
      ).finally(() => {
        this.busy = false;
        this.next();
      });
    }
  }
}
