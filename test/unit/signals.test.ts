// src/signals.ts: one operation's signal, following long-lived ones without staying registered with them.
import { getEventListeners } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { linkSignals, withSignal } from '../../src/signals.js';
import { ROOT } from '../helpers.js';

describe('withSignal', () => {
  it('aborts with the reason of whichever source aborts, while the operation runs', async () => {
    const agent = new AbortController();
    const transport = new AbortController();
    const seen = await withSignal([agent.signal, undefined, transport.signal], async (s) => {
      expect(s.aborted).toBe(false);
      transport.abort(new Error('closed by its owner'));
      return { aborted: s.aborted, reason: (s.reason as Error).message };
    });
    expect(seen).toEqual({ aborted: true, reason: 'closed by its owner' });
  });

  it('starts aborted when a source already is', async () => {
    const agent = new AbortController();
    agent.abort(new Error('SIGTERM'));
    expect(await withSignal([agent.signal], async (s) => (s.reason as Error).message)).toBe('SIGTERM');
  });

  it('leaves nothing registered with its sources once the operation settled, however it ended', async () => {
    const agent = new AbortController();
    for (let i = 0; i < 1000; i++) await withSignal([agent.signal], async () => i);
    await expect(withSignal([agent.signal], async () => Promise.reject(new Error('refused')))).rejects.toThrow('refused');
    expect(getEventListeners(agent.signal, 'abort')).toHaveLength(0);
    // and a signal made after the sources were let go of no longer follows them
    let made: AbortSignal | undefined;
    await withSignal([agent.signal], async (s) => void (made = s));
    agent.abort();
    expect(made!.aborted).toBe(false);
  });
});

describe('linkSignals', () => {
  it('follows every source until unlinked, then none; unlinking twice does nothing', () => {
    const agent = new AbortController();
    const transport = new AbortController();
    const link = linkSignals([agent.signal, undefined, transport.signal]);
    expect(getEventListeners(agent.signal, 'abort')).toHaveLength(1);
    expect(getEventListeners(transport.signal, 'abort')).toHaveLength(1);
    link.unlink();
    link.unlink();
    expect(getEventListeners(agent.signal, 'abort')).toHaveLength(0);
    expect(getEventListeners(transport.signal, 'abort')).toHaveLength(0);
    transport.abort(new Error('closed'));
    expect(link.signal.aborted).toBe(false);
  });

  it("aborts with the first aborting source's reason while linked", () => {
    const agent = new AbortController();
    const stop = new AbortController();
    const link = linkSignals([agent.signal, stop.signal]);
    stop.abort(new Error('the other side failed'));
    agent.abort(new Error('SIGTERM'));
    expect((link.signal.reason as Error).message).toBe('the other side failed');
    link.unlink();
    expect(getEventListeners(agent.signal, 'abort')).toHaveLength(0);
  });

  it('starts aborted, registering nothing, when a source already is', () => {
    const agent = new AbortController();
    const gone = new AbortController();
    gone.abort(new Error('closed before'));
    const link = linkSignals([agent.signal, gone.signal]);
    expect((link.signal.reason as Error).message).toBe('closed before');
    expect(getEventListeners(agent.signal, 'abort')).toHaveLength(0);
  });
});

describe('the abort signals of src/', () => {
  // AbortSignal.any keeps its long-lived sources' entries for every signal it makes (docs/operations.md,
  // "Memory"): every place that ties an operation to the agent's or a transport's signal links them
  it('are linked with withSignal or linkSignals, never AbortSignal.any', async () => {
    const files = (await readdir(join(ROOT, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts'));
    const callers: string[] = [];
    for (const f of files) {
      // comments may name it; any other mention (a call, an alias) counts
      const code = (await readFile(join(ROOT, 'src', f), 'utf8')).replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
      if (/AbortSignal\.any\b/.test(code)) callers.push(f);
    }
    expect(files.length).toBeGreaterThan(50);
    expect(callers).toEqual([]);
  });
});
