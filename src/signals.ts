/**
 * One operation's signal, aborted when any of `signals` aborts, and let go of when the operation
 * ends. AbortSignal.any would do the first, but each signal it makes stays registered with its
 * sources until they are collected or aborted, and an agent's own signal and a transport's close
 * signal live as long as the process: a request each minute over months adds up (docs/operations.md,
 * "Memory"). Here each source gets a listener, removed when `fn` settles.
 */
export async function withSignal<T>(signals: readonly (AbortSignal | undefined)[], fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const link = linkSignals(signals);
  try {
    return await fn(link.signal);
  } finally {
    link.unlink();
  }
}

/**
 * withSignal for an operation that outlives a call (a stream, a class's fetches): the signal, and
 * `unlink`, which lets go of the sources; the owner calls it once the operation is over. Calling it
 * again does nothing.
 */
export function linkSignals(signals: readonly (AbortSignal | undefined)[]): { readonly signal: AbortSignal; unlink(): void } {
  const ctl = new AbortController();
  const sources = signals.filter((s): s is AbortSignal => s !== undefined);
  const already = sources.find((s) => s.aborted);
  if (already) {
    ctl.abort(already.reason);
    return { signal: ctl.signal, unlink: () => undefined };
  }
  const follow = sources.map((s) => {
    const onAbort = () => ctl.abort(s.reason);
    s.addEventListener('abort', onAbort, { once: true });
    return () => s.removeEventListener('abort', onAbort);
  });
  return { signal: ctl.signal, unlink: () => follow.splice(0).forEach((stop) => stop()) };
}
