import { afterEach, describe, expect, it, vi } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { HttpTransport } from '../../../src/transport/http.js';
import { parseLocation } from '../../../src/transport/location.js';
import { startTrickle, type Trickle } from '../../trickle.js';

// The HTTP transport against a server of the test's own; nginx, the caching tier and the mirror
// rules are proven in test/integration/http.test.ts.

let server: Trickle | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('HTTP close()', () => {
  it('cuts a read still in flight at once, even one that never goes idle, and does not retry it', async () => {
    const s = (server = await startTrickle());
    // an idle timeout the trickle never reaches, and retries: only close() can end the read in time
    const t = new HttpTransport(parseLocation(`http://127.0.0.1:${s.port}/repo`) as ConstructorParameters<typeof HttpTransport>[0], { idleTimeoutMs: 5000, retries: 5 });
    const reading = t.readTo('blob', () => undefined).then(
      () => 'read to the end',
      (e: unknown) => e,
    );
    await vi.waitFor(() => expect(s.sent()).toBeGreaterThan(2), { timeout: 10_000 }); // the body flows (a byte per 100 ms; slower on a loaded machine)
    const closed = await Promise.race([t.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('close() still waiting after 3 s'), 3000))]);
    expect(closed).toBe('closed');
    const outcome = await Promise.race([reading, new Promise((r) => setTimeout(() => r('the read still running 3 s after close()'), 3000))]);
    expect(outcome).toBeInstanceOf(TarportError);
    expect((outcome as TarportError).code).toBe('ABORTED');
    expect((outcome as TarportError).retryable).toBe(false);
    expect(s.requests()).toBe(1);
  });
});
