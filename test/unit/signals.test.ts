// src/signals.ts: one operation's signal, following long-lived ones without staying registered with them.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { withSignal } from '../../src/signals.js';

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
