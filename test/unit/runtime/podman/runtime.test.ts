// src/runtime/podman/runtime.ts: the load plan and the platform (the real Podman runs in
// test/integration/runtimes.test.ts).
import { machine } from 'node:os';
import { describe, expect, it } from 'vitest';
import { PodmanRuntime, platformOfMachine, type DockerApi } from '../../../../src/runtime/index.js';

// no call may reach the API: plan and platform are answered without it
const api = new Proxy({ endpoint: 'unix:///nowhere/podman.sock' }, {
  get: (t, k) => (k === 'endpoint' ? t.endpoint : () => { throw new Error(`unexpected API call ${String(k)}`); }),
}) as unknown as DockerApi;

describe('Podman load plan and platform', () => {
  it('takes unencrypted layers as stored in a complete OCI archive, and docker save archives otherwise', async () => {
    const rt = new PodmanRuntime(api);
    const stored = await rt.planStored([{ diffId: `sha256:${'a'.repeat(64)}`, digest: `sha256:${'1'.repeat(64)}` }]);
    expect(stored).toEqual({ format: 'oci-layout-stored', omit: new Set(), thin: false, qualifiedNames: true });
    expect((await rt.plan()).format).toBe('docker-save');
  });

  it("is the host's platform, without asking the API (Podman's GET /version is slow)", async () => {
    expect(await new PodmanRuntime(api).platform()).toEqual(platformOfMachine('linux', machine()));
  });
});
