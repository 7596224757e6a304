import { readFile, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { UnnamedArchiveError, nameFor } from '../../../src/producer/naming.js';
import type { PublishResult } from '../../../src/producer/publish.js';
import { EXIT_LEFT_FOR_NEXT_RUN, ignoredName, watchFolder, type WatchEvent, type WatchOptions } from '../../../src/producer/watch.js';
import type { ImageRef } from '../../../src/repo/index.js';
import { tempDir } from '../../helpers.js';

const published = (path: string, name?: ImageRef): PublishResult => ({
  archive: path,
  releases: [{ name: name?.name ?? 'app', tag: name?.tag ?? 'latest', version: 1, status: 'published', kind: 'image' }],
  uploadedBytes: 10,
  uploadedObjects: 1,
});

/** A wait past the file system's tick of birth times: files made before and after it arrived apart. */
const tick = () => new Promise((r) => setTimeout(r, 30));

/** A file written long enough ago to have settled. */
async function settledFile(path: string, text = 'archive'): Promise<void> {
  await writeFile(path, text);
  const past = new Date(Date.now() - 60_000);
  await utimes(path, past, past);
}

function once(dir: string, publish: WatchOptions['publish'], extra: Partial<WatchOptions> = {}) {
  const events: WatchEvent[] = [];
  const run = watchFolder({
    dir,
    publish,
    nameFor: async () => undefined,
    settleMs: 5_000,
    giveUpMs: 3_600_000,
    once: true,
    removeDone: false,
    signal: new AbortController().signal,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  return { run, events };
}

describe('ignoredName', () => {
  const rows: [string, boolean][] = [
    ['app.tar', false],
    ['.app.tar', true], // dot file: an upload in progress by rsync and the like
    ['app.tar.part', true],
    ['app.tar.tmp', true],
    ['app.tar.name', true], // a sidecar, published with its archive
    ['app.tar.reason', true],
    ['done', true],
    ['failed', true],
    ['done.tar', false],
  ];
  it.each(rows)('%s → %s', (name, ignored) => expect(ignoredName(name)).toBe(ignored));
});

describe('watchFolder --once', () => {
  it('publishes every settled file in the order they arrived, with its name, and moves it (and its sidecar) to done/', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'b.tar'));
    await tick();
    await settledFile(join(dir, 'a.tar'));
    await writeFile(join(dir, 'a.tar.name'), 'web:1');
    await settledFile(join(dir, 'c.tar.part'));
    const calls: [string, ImageRef | undefined][] = [];
    const { run, events } = once(
      dir,
      async (p, name) => {
        calls.push([p, name]);
        return published(p, name);
      },
      { nameFor: async (p) => (p.endsWith('a.tar') ? { name: 'web', tag: '1' } : undefined) },
    );
    expect(await run).toEqual({ published: 2, failed: 0, pending: 0, exitCode: 0 });
    expect(calls).toEqual([
      [join(dir, 'b.tar'), undefined],
      [join(dir, 'a.tar'), { name: 'web', tag: '1' }],
    ]);
    expect((await readdir(dir)).sort()).toEqual(['c.tar.part', 'done', 'failed']);
    expect((await readdir(join(dir, 'done'))).sort()).toEqual(['a.tar', 'a.tar.name', 'b.tar']);
    expect(events.filter((e) => e.kind === 'published')).toEqual([
      { kind: 'published', file: join(dir, 'b.tar'), releases: [{ ref: 'app:latest', version: 1, status: 'published' }], uploadedBytes: 10 },
      { kind: 'published', file: join(dir, 'a.tar'), releases: [{ ref: 'web:1', version: 1, status: 'published' }], uploadedBytes: 10 },
    ]);
  });

  it('a file of the same name already in done/ is kept: the new one gets a time suffix', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'), 'first');
    expect((await once(dir, async (p) => published(p)).run).published).toBe(1);
    await settledFile(join(dir, 'a.tar'), 'second');
    expect((await once(dir, async (p) => published(p)).run).published).toBe(1);
    const done = (await readdir(join(dir, 'done'))).sort();
    expect(done).toHaveLength(2);
    expect(done[0]).toBe('a.tar');
    expect(done[1]).toMatch(/^a\.tar\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/);
    expect(await readFile(join(dir, 'done', 'a.tar'), 'utf8')).toBe('first');
    expect(await readFile(join(dir, 'done', done[1]!), 'utf8')).toBe('second');
  });

  it('an agent killed while it moved a file and its sidecar: the sidecar goes back to a file not moved yet, and never names a later file of the same name', async () => {
    const named = async (p: string) => nameFor(p, []);
    const calls: [string, ImageRef | undefined][] = [];
    const publish = async (p: string, name: ImageRef | undefined) => {
      calls.push([basename(p), name]);
      return published(p, name);
    };
    // killed after the sidecar was hidden, before the file moved: the file is handled again, by its sidecar's name
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    await writeFile(join(dir, `.a.tar.${(await stat(join(dir, 'a.tar'))).ino}.name.moving`), 'web:1');
    const first = once(dir, publish, { nameFor: named });
    expect((await first.run).published).toBe(1);
    expect(first.events.filter((e) => e.kind === 'warning').map((e) => e.kind === 'warning' && e.file)).toEqual([join(dir, 'a.tar')]);
    expect((await readdir(dir)).sort()).toEqual(['done', 'failed']);
    expect((await readdir(join(dir, 'done'))).sort()).toEqual(['a.tar', 'a.tar.name']);
    // killed after the file moved (to done/), before its sidecar: a new a.tar, without a sidecar, is not named by the old one
    await writeFile(join(dir, `.a.tar.${(await stat(join(dir, 'done', 'a.tar'))).ino}.name.moving`), 'web:1');
    await settledFile(join(dir, 'a.tar'), 'a later archive');
    const second = once(dir, publish, { nameFor: named });
    expect((await second.run).published).toBe(1);
    expect(second.events.filter((e) => e.kind === 'warning').map((e) => e.kind === 'warning' && e.message)).toEqual([expect.stringContaining('its left-over .name sidecar')]);
    expect(calls).toEqual([
      ['a.tar', { name: 'web', tag: '1' }],
      ['a.tar', undefined],
    ]);
    expect((await readdir(dir)).sort()).toEqual(['done', 'failed']);
  });

  it('removeDone removes a published file and its sidecar instead of moving them', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    await writeFile(join(dir, 'a.tar.name'), 'web:1');
    expect((await once(dir, async (p) => published(p), { removeDone: true }).run).published).toBe(1);
    expect((await readdir(dir)).sort()).toEqual(['done', 'failed']);
    expect(await readdir(join(dir, 'done'))).toEqual([]);
  });

  it('a file still being written is waited for (bounded by giveUpMs), then published once it settles', async () => {
    const dir = await tempDir();
    // before the write: the settle time counts from the file's modification time, set by the write
    const started = Date.now();
    await writeFile(join(dir, 'fresh.tar'), 'half');
    let calls = 0;
    const { run } = once(dir, async (p) => (calls++, published(p)), { settleMs: 1_000, giveUpMs: 20_000 });
    expect(await run).toEqual({ published: 1, failed: 0, pending: 0, exitCode: 0 });
    expect(calls).toBe(1);
    // it waited for the file to be still for settleMs before it published
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('a file that keeps changing past giveUpMs is left for the next run, named, with exit 75', async () => {
    const dir = await tempDir();
    const file = join(dir, 'growing.tar');
    await writeFile(file, 'x');
    const grow = setInterval(() => void writeFile(file, `x${Date.now()}`), 200);
    try {
      const { run, events } = once(dir, async (p) => published(p), { settleMs: 1_000, giveUpMs: 2_500 });
      expect(await run).toMatchObject({ published: 0, failed: 0, pending: 1, exitCode: EXIT_LEFT_FOR_NEXT_RUN });
      expect(events.some((e) => e.kind === 'left' && e.file === file)).toBe(true);
    } finally {
      clearInterval(grow);
    }
  });

  it('bad input goes to failed/ with a .reason that says what is wrong and what to do; exit code 2', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'export.tar'));
    await settledFile(join(dir, 'junk.tar'));
    const { run, events } = once(dir, async (p) => {
      if (p.endsWith('export.tar')) throw new UnnamedArchiveError(`${p}: this is a root file system archive (docker export) and carries no image name`);
      throw new TarportError('BAD_INPUT', `${p}: not a tar archive`);
    });
    expect(await run).toEqual({ published: 0, failed: 2, pending: 0, exitCode: 2 });
    expect((await readdir(join(dir, 'failed'))).sort()).toEqual(['export.tar', 'export.tar.reason', 'junk.tar', 'junk.tar.reason']);
    const unnamed = await readFile(join(dir, 'failed', 'export.tar.reason'), 'utf8');
    expect(unnamed).toContain('carries no image name');
    expect(unnamed).toContain('Name it: put NAME:TAG into a file beside it called <file>.name');
    const junk = await readFile(join(dir, 'failed', 'junk.tar.reason'), 'utf8');
    expect(junk).toContain('not a tar archive');
    expect(junk).toContain('Make the archive again with docker save');
    expect(events.filter((e) => e.kind === 'failed').map((e) => e.kind === 'failed' && e.code)).toEqual(['BAD_INPUT', 'BAD_INPUT']);
  });

  it('the advice follows the error type, not its wording', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    await once(dir, async () => {
      throw new TarportError('BAD_INPUT', 'this archive carries no tag (but is not an unnamed-archive error)');
    }).run;
    expect(await readFile(join(dir, 'failed', 'a.tar.reason'), 'utf8')).not.toContain('Name it');
  });

  it('a server that is down leaves the file in place for the next run; exit code 1', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    const { run, events } = once(dir, async () => {
      throw new TarportError('CONNECTION', 'ftp://host: connection refused');
    });
    expect(await run).toEqual({ published: 0, failed: 0, pending: 1, exitCode: 1 });
    expect((await readdir(dir)).sort()).toEqual(['a.tar', 'done', 'failed']);
    expect(events).toContainEqual({ kind: 'failed', file: join(dir, 'a.tar'), code: 'CONNECTION', message: 'ftp://host: connection refused (left in place for the next run)' });
  });

  it.each([
    ['a full disk', new TarportError('IO', '/var/spool/repo/blobs: no space left on device; free space, then run again', { retryable: false })],
    ['a login refused', new TarportError('IO', 'sftp://deploy@host/repo: login refused', { retryable: false })],
    ['an untrusted host key', new TarportError('UNTRUSTED', 'sftp://host/repo: unknown host key', { retryable: false })],
    ['a repository that is not there', new TarportError('NO_REPOSITORY', 'ftp://host/repo holds no repository', { retryable: false })],
  ])('%s is not the file\'s fault: the file stays for the next run (exit 1), nothing goes to failed/', async (_what, fault) => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    const { run, events } = once(dir, async () => {
      throw fault;
    });
    expect(await run).toEqual({ published: 0, failed: 0, pending: 1, exitCode: 1 });
    expect((await readdir(dir)).sort()).toEqual(['a.tar', 'done', 'failed']);
    expect(await readdir(join(dir, 'failed'))).toEqual([]);
    expect(events).toContainEqual({ kind: 'failed', file: join(dir, 'a.tar'), code: fault.code, message: `${fault.message} (left in place for the next run)` });
  });

  it('a published file that cannot be moved away is still published (with a warning), and the next file is published too', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    await settledFile(join(dir, 'b.tar'));
    const seen: string[] = [];
    const { run, events } = once(dir, async (p) => {
      seen.push(p);
      // the file goes away under the publish (another process took it): the move fails
      if (p.endsWith('a.tar')) await rm(p);
      return published(p);
    });
    expect(await run).toEqual({ published: 2, failed: 0, pending: 0, exitCode: 0 });
    expect(seen).toEqual([join(dir, 'a.tar'), join(dir, 'b.tar')]);
    expect(await readdir(join(dir, 'done'))).toEqual(['b.tar']);
    const warning = events.find((e) => e.kind === 'warning');
    expect(warning).toMatchObject({ kind: 'warning', file: join(dir, 'a.tar') });
    expect((warning as { message: string }).message).toMatch(/^published, but not moved out of the folder \(it will be published again, as identical content\): ENOENT/);
  });

  it('after a file that could not be published (server down), the files after it are left too, in order: none of them goes first', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    await settledFile(join(dir, 'b.tar'));
    const tried: string[] = [];
    const { run, events } = once(dir, async (p) => {
      tried.push(p);
      if (p.endsWith('a.tar')) throw new TarportError('CONNECTION', 'ftp://host: connection refused');
      return published(p);
    });
    expect(await run).toEqual({ published: 0, failed: 0, pending: 2, exitCode: 1 });
    expect(tried).toEqual([join(dir, 'a.tar')]);
    expect((await readdir(dir)).sort()).toEqual(['a.tar', 'b.tar', 'done', 'failed']);
    expect(events).toContainEqual({ kind: 'left', file: join(dir, 'b.tar'), reason: 'after a.tar, which could not be published this run: files are published in order' });
  });

  it('an archive that ends early and stays quiet for giveUpMs is given up on (failed/)', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    const cut = async (): Promise<PublishResult> => {
      throw new TarportError('BAD_INPUT', 'the archive ends in the middle of a layer', { truncated: true });
    };
    // giving up after 30 s: failed, with the truncation advice
    expect(await once(dir, cut, { giveUpMs: 30_000 }).run).toEqual({ published: 0, failed: 1, pending: 0, exitCode: 2 });
    expect(await readFile(join(dir, 'failed', 'a.tar.reason'), 'utf8')).toContain('The file stopped growing before the archive ended');
  });

  it('an unexpected exception is reported as an internal error and the file goes to failed/ (exit 1)', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    const { run, events } = once(dir, async () => {
      throw new RangeError('boom');
    });
    expect(await run).toEqual({ published: 0, failed: 1, pending: 0, exitCode: 1 });
    expect(events).toContainEqual({ kind: 'failed', file: join(dir, 'a.tar'), code: 'INTERNAL', message: 'internal error: boom' });
  });
});

/** Rejects after `ms`: every wait in a test has a bound. */
const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms))]);

describe('watchFolder (watching)', () => {
  it('publishes a file that arrives once it has settled, and stops on abort', async () => {
    const dir = await tempDir();
    const stop = new AbortController();
    const events: WatchEvent[] = [];
    let publishedAt = 0;
    let onPublished = () => undefined as void;
    const publishedOnce = new Promise<void>((r) => (onPublished = r));
    const run = watchFolder({
      dir,
      publish: async (p) => {
        publishedAt = Date.now();
        return published(p);
      },
      nameFor: async () => undefined,
      settleMs: 300,
      giveUpMs: 60_000,
      once: false,
      removeDone: false,
      signal: stop.signal,
      onEvent: (e) => {
        events.push(e);
        if (e.kind === 'watching') void writeFile(join(dir, 'late.tar'), 'archive');
        if (e.kind === 'published') onPublished();
      },
    });
    await within(publishedOnce, 60_000, 'publish of a new file');
    // it waited for the file to hold still for settleMs (a rename keeps the modification time)
    expect(publishedAt - (await stat(join(dir, 'done', 'late.tar'))).mtimeMs).toBeGreaterThanOrEqual(290);
    stop.abort();
    expect(await within(run, 30_000, 'stop')).toEqual({ published: 1, failed: 0, pending: 0, exitCode: 0 });
    expect(events.map((e) => e.kind)).toEqual(['watching', 'publishing', 'published', 'stopped']);
    expect(await readdir(join(dir, 'done'))).toEqual(['late.tar']);
  });
});

/**
 * The agent on `dir`, watching, until `stop()`; `published(n)` settles once n files were published.
 * `onEvent` sees each event first (a test that changes the clock at one).
 */
function watching(dir: string, publish: WatchOptions['publish'], settleMs: number, onEvent: (e: WatchEvent) => void = () => undefined) {
  const stop = new AbortController();
  const events: WatchEvent[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const run = watchFolder({
    dir,
    publish,
    nameFor: async () => undefined,
    settleMs,
    giveUpMs: 60_000,
    once: false,
    removeDone: false,
    signal: stop.signal,
    onEvent: (e) => {
      onEvent(e);
      events.push(e);
      const count = events.filter((x) => x.kind === 'published').length;
      for (const w of waiters) if (count >= w.n) w.resolve();
    },
  });
  return {
    events,
    published: (n: number) => new Promise<void>((resolve) => waiters.push({ n, resolve })),
    /** Stops the agent; its summary. */
    stop: () => {
      stop.abort();
      return within(run, 10_000, 'stop');
    },
  };
}

describe('the order files are published in', () => {
  /**
   * build-9.tar arrived before build-10.tar, which sorts first by name; both carry the same
   * modification time (copied with their times kept), so only when each arrived can tell.
   */
  async function twoBuilds(): Promise<string> {
    const dir = await tempDir();
    const past = new Date(Date.now() - 60_000);
    for (const name of ['build-9.tar', 'build-10.tar']) {
      await writeFile(join(dir, name), name);
      await utimes(join(dir, name), past, past);
      await tick();
    }
    return dir;
  }

  it('--once (cron): in the order they arrived, not by name, so the older archive never becomes the newest release', async () => {
    const dir = await twoBuilds();
    const tried: string[] = [];
    const { run } = once(dir, async (p) => (tried.push(basename(p)), published(p)));
    await run;
    expect(tried).toEqual(['build-9.tar', 'build-10.tar']);
  });

  it('--once: a file still being copied that arrived first is waited for, and published before a quiet one that came after it', async () => {
    const dir = await tempDir();
    const copying = join(dir, 'z-first.tar');
    await writeFile(copying, 'part');
    await tick();
    await settledFile(join(dir, 'a-second.tar'));
    // the copy goes on for a while, then ends
    const { appendFile } = await import('node:fs/promises');
    const writer = setInterval(() => void appendFile(copying, 'more'), 50);
    setTimeout(() => clearInterval(writer), 400);
    const tried: string[] = [];
    const { run } = once(dir, async (p) => (tried.push(basename(p)), published(p)), { settleMs: 300, giveUpMs: 20_000 });
    expect(await run).toMatchObject({ published: 2, exitCode: 0 });
    expect(tried).toEqual(['z-first.tar', 'a-second.tar']);
  });

  it('an agent started on a folder with a backlog (a restart): in the order they arrived', async () => {
    const dir = await twoBuilds();
    const tried: string[] = [];
    const agent = watching(dir, async (p) => (tried.push(basename(p)), published(p)), 100);
    await within(agent.published(2), 15_000, 'both published');
    await agent.stop();
    expect(tried).toEqual(['build-9.tar', 'build-10.tar']);
  });
});

describe('watchFolder (watching): retries', () => {
  it('a file waiting for its retry holds back the files after it, which go on in order once it is published (no older archive lands last)', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    await settledFile(join(dir, 'b.tar'));
    const tried: string[] = [];
    const agent = watching(
      dir,
      async (p) => {
        tried.push(basename(p));
        if (tried.length === 1) throw new TarportError('CONNECTION', 'ftp://host: connection refused');
        return published(p);
      },
      100,
    );
    await within(agent.published(2), 15_000, 'both published');
    await agent.stop();
    expect(tried).toEqual(['a.tar', 'a.tar', 'b.tar']);
    expect(agent.events).toContainEqual({ kind: 'waiting', file: join(dir, 'b.tar'), reason: 'after a.tar, which waits for its retry: files are published in order' });
    expect(agent.events.filter((e) => e.kind === 'published').map((e) => basename((e as { file: string }).file))).toEqual(['a.tar', 'b.tar']);
  });

  it('a retry whose timer fires before its time by the wall clock (a clock stepped back) is kept, not dropped', async () => {
    const dir = await tempDir();
    await settledFile(join(dir, 'a.tar'));
    let tries = 0;
    const realNow = Date.now.bind(Date);
    const clock = vi.spyOn(Date, 'now');
    try {
      const agent = watching(
        dir,
        async (p) => {
          if (++tries === 1) throw new TarportError('CONNECTION', 'ftp://host: connection refused');
          return published(p);
        },
        100,
        // the wall clock steps back by 300 ms while the retry waits (NTP)
        (e) => e.kind === 'retrying' && void clock.mockImplementation(() => realNow() - 300),
      );
      await within(agent.published(1), 10_000, 'the retry');
      expect(tries).toBe(2);
      expect(await agent.stop()).toEqual({ published: 1, failed: 0, pending: 0, exitCode: 0 });
    } finally {
      clock.mockRestore();
    }
  });
});

describe('watchFolder (watching): settling', () => {
  it('a file that never stops changing is said every --give-up, and the files after it wait for it (published in order)', async () => {
    const dir = await tempDir();
    const busy = join(dir, 'a.tar');
    await writeFile(busy, 'x');
    await tick(); // b.tar, made below, arrives after it
    // a writer that does not stop (a slow copy, or a log written into the folder by mistake)
    const writer = setInterval(() => void writeFile(busy, `x${Date.now()}`), 40);
    const stop = new AbortController();
    const events: WatchEvent[] = [];
    const published: string[] = [];
    const run = watchFolder({
      dir,
      publish: async (p) => (published.push(basename(p)), { archive: p, releases: [], uploadedBytes: 0, uploadedObjects: 0 }),
      nameFor: async () => undefined,
      // stillness needs 1.5 s: a pause of the writer's 40 ms beat on a busy machine (a slow thread,
      // a collection) must not read as a file that settled
      settleMs: 1_500,
      giveUpMs: 1_000,
      once: false,
      removeDone: false,
      signal: stop.signal,
      onEvent: (e) => events.push(e),
    });
    const said = { kind: 'waiting', file: busy, reason: 'still being written after 1 s; the files after it wait for it (they are published in order)' };
    try {
      await settledFile(join(dir, 'b.tar'));
      await vi.waitFor(() => expect(events.filter((e) => e.kind === 'waiting' && e.file === busy).length).toBeGreaterThanOrEqual(2), { timeout: 15_000, interval: 50 });
      expect(events).toContainEqual(said);
      expect(published).toEqual([]);
    } finally {
      clearInterval(writer);
    }
    await vi.waitFor(() => expect(published).toEqual(['a.tar', 'b.tar']), { timeout: 15_000, interval: 50 });
    stop.abort();
    expect(await within(run, 10_000, 'stop')).toEqual({ published: 2, failed: 0, pending: 0, exitCode: 0 });
  });

  it('a file whose modification time lies in the future (a clock ahead) is published once it held still for settleMs by our clock', async () => {
    const dir = await tempDir();
    const path = join(dir, 'ahead.tar');
    await writeFile(path, 'archive');
    const ahead = new Date(Date.now() + 86_400_000);
    await utimes(path, ahead, ahead);
    const agent = watching(dir, async (p) => published(p), 300);
    await within(agent.published(1), 10_000, 'publish of a file with a future time');
    expect(await agent.stop()).toEqual({ published: 1, failed: 0, pending: 0, exitCode: 0 });
  });
});

describe('watchFolder: a file written again or replaced while it is published', () => {
  it('--once: what was read is published, the file is not moved, and its new content is published next and then moved', async () => {
    const dir = await tempDir();
    const path = join(dir, 'app.tar');
    await settledFile(path, 'v1');
    const read: string[] = [];
    const { run, events } = once(
      dir,
      async (p) => {
        read.push(await readFile(p, 'utf8'));
        // `docker save -o app.tar` run again over the same name while the first is published
        if (read.length === 1) await writeFile(p, 'v2, longer');
        return published(p);
      },
      { settleMs: 100 },
    );
    expect(await run).toEqual({ published: 2, failed: 0, pending: 0, exitCode: 0 });
    expect(read).toEqual(['v1', 'v2, longer']);
    expect(await readFile(join(dir, 'done', 'app.tar'), 'utf8')).toBe('v2, longer');
    expect(events.filter((e) => e.kind === 'waiting')).toEqual([
      { kind: 'waiting', file: path, reason: 'it was written again or replaced while it was published: what was read is published, and the file as it is now is published next; publishing it again once it holds still' },
    ]);
  });

  it('--once: a bad archive replaced by another under its name while it was read is not sent to failed/; the new one is published', async () => {
    const dir = await tempDir();
    const path = join(dir, 'app.tar');
    await settledFile(path, 'half-copied');
    await settledFile(join(dir, '.app.tar.part'), 'whole');
    let calls = 0;
    const { run, events } = once(
      dir,
      async (p) => {
        if (++calls > 1) return published(p);
        // replaced whole (another inode, same size and time would not hide it) as the read fails
        await rename(join(dir, '.app.tar.part'), p);
        throw new TarportError('BAD_INPUT', `${p}: not a tar archive`);
      },
      { settleMs: 100 },
    );
    expect(await run).toEqual({ published: 1, failed: 0, pending: 0, exitCode: 0 });
    expect(await readdir(join(dir, 'failed'))).toEqual([]);
    expect(await readFile(join(dir, 'done', 'app.tar'), 'utf8')).toBe('whole');
    expect(events.find((e) => e.kind === 'waiting')).toEqual({ kind: 'waiting', file: path, reason: `it changed while it was read (${path}: not a tar archive); publishing it again once it holds still` });
  });

  it('watching: the new content is published after the old, and only then moved to done/', async () => {
    const dir = await tempDir();
    const path = join(dir, 'app.tar');
    const read: string[] = [];
    const agent = watching(
      dir,
      async (p) => {
        read.push(await readFile(p, 'utf8'));
        if (read.length === 1) await writeFile(p, 'v2, longer');
        return published(p);
      },
      100,
    );
    await settledFile(path, 'v1');
    await within(agent.published(2), 10_000, 'two publishes');
    expect(await agent.stop()).toEqual({ published: 2, failed: 0, pending: 0, exitCode: 0 });
    expect(read).toEqual(['v1', 'v2, longer']);
    expect(await readFile(join(dir, 'done', 'app.tar'), 'utf8')).toBe('v2, longer');
  });

  it('watching: files that came while it was published wait for its new content (no older archive lands last)', async () => {
    const dir = await tempDir();
    const order: string[] = [];
    const agent = watching(
      dir,
      async (p) => {
        order.push(`${basename(p)}=${await readFile(p, 'utf8')}`);
        if (order.length === 1) {
          await writeFile(p, 'a2'); // a.tar saved again ...
          await settledFile(join(dir, 'b.tar'), 'b1'); // ... then b.tar arrives, settled at once
        }
        return published(p);
      },
      300,
    );
    await settledFile(join(dir, 'a.tar'), 'a1');
    await within(agent.published(3), 10_000, 'three publishes');
    expect(await agent.stop()).toEqual({ published: 3, failed: 0, pending: 0, exitCode: 0 });
    expect(order).toEqual(['a.tar=a1', 'a.tar=a2', 'b.tar=b1']);
  });

  it('--once: written again in place with the same size and its old times put back is still told by its change time', async () => {
    const dir = await tempDir();
    const path = join(dir, 'app.tar');
    await settledFile(path, 'v1');
    const read: string[] = [];
    const { run } = once(
      dir,
      async (p) => {
        read.push(await readFile(p, 'utf8'));
        if (read.length === 1) {
          const { atime, mtime } = await stat(p);
          await writeFile(p, 'v2');
          await utimes(p, atime, mtime); // cp -p, rsync -t
        }
        return published(p);
      },
      { settleMs: 100 },
    );
    expect(await run).toEqual({ published: 2, failed: 0, pending: 0, exitCode: 0 });
    expect(read).toEqual(['v1', 'v2']);
  });

  it('--once: truncated and written again while it was read (which reads as an archive that ends early) is published, not sent to failed/', async () => {
    const dir = await tempDir();
    const path = join(dir, 'app.tar');
    await settledFile(path, 'an old archive');
    let calls = 0;
    const { run } = once(
      dir,
      async (p) => {
        if (++calls > 1) return published(p);
        await writeFile(p, 'the new one'); // docker save -o over it: truncated, then written
        throw new TarportError('BAD_INPUT', `${p}: the archive ends in the middle of a layer`, { truncated: true });
      },
      // an old file: a truncated archive that held still this long would be given up on
      { settleMs: 100, giveUpMs: 2_000 },
    );
    expect(await run).toEqual({ published: 1, failed: 0, pending: 0, exitCode: 0 });
    expect(await readdir(join(dir, 'failed'))).toEqual([]);
  });

  it('--once: a file that changes on every read is taken as read after 3 changes in a row (no publish without end)', async () => {
    const dir = await tempDir();
    const path = join(dir, 'app.tar');
    await settledFile(path, 'v0');
    let calls = 0;
    const { run, events } = once(
      dir,
      async (p) => {
        calls++;
        await writeFile(p, `v${calls}, longer`);
        const past = new Date(Date.now() - 60_000);
        await utimes(p, past, past);
        return published(p);
      },
      { settleMs: 100 },
    );
    expect(await run).toEqual({ published: 4, failed: 0, pending: 0, exitCode: 0 });
    expect(calls).toBe(4);
    expect(events.filter((e) => e.kind === 'warning')).toEqual([{ kind: 'warning', file: path, message: 'it changed while it was read 4 times in a row; taking what was read as the file' }]);
    expect(await readdir(join(dir, 'done'))).toEqual(['app.tar']);
  });
});
