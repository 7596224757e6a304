// src/runtime/containerd/ctr.ts: ctr driven as a child process, an import fed on its stdin.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ctr } from '../../../../src/runtime/containerd/ctr.js';
import { tempDir, writeScript } from '../../../helpers.js';

describe('ctr with an input', () => {
  it('an input that failed before ctr started cuts the import at once, and the call fails with the input\'s fault', async () => {
    const dir = await tempDir();
    const socket = join(dir, 'containerd.sock');
    await writeFile(socket, '');
    // as ctr images import: reads its stdin to the end, then fails on what it got
    const bin = join(dir, 'ctr');
    writeScript(bin, `#!/bin/sh\nwc -c > '${dir}/got'\necho 'ctr: archive/tar: invalid tar header' >&2\nexit 1\n`);
    const fault = new Error('object sha256:12 in memory://test: digest mismatch');
    const input = new Readable({ read() {} }).on('error', () => undefined);
    input.destroy(fault);
    await new Promise((r) => setImmediate(r));
    const t0 = Date.now();
    const got = await Promise.race([
      ctr({ socket, namespace: 'k8s.io', ctr: bin }, ['images', 'import', '-'], { input }).then(() => 'imported', (e: unknown) => e),
      new Promise((r) => setTimeout(() => r('still waiting after 5 s'), 5_000)),
    ]);
    expect(got).toBe(fault);
    expect(Date.now() - t0).toBeLessThan(3_000);
  });

  it('an import whose ctr stops taking its input is cut after the intake bound, not left waiting for ever', async () => {
    const dir = await tempDir();
    const socket = join(dir, 'containerd.sock');
    await writeFile(socket, '');
    // as ctr when containerd stops answering: it reads none of its stdin for a while (then, to end
    // the test soon, it reads what it is given, the cut's end included, and exits)
    const bin = join(dir, 'ctr');
    writeScript(bin, '#!/bin/sh\nsleep 2\nexec cat > /dev/null\n');
    const input = new Readable({ read() { this.push(Buffer.alloc(64 << 10)); } });
    const got = await Promise.race([
      ctr({ socket, namespace: 'k8s.io', ctr: bin }, ['images', 'import', '-'], { input, intakeIdleMs: 300 }).then(() => 'imported', (e: unknown) => e),
      new Promise((r) => setTimeout(() => r('still waiting after 25 s'), 25_000)),
    ]);
    expect(got).toMatchObject({ code: 'DAEMON', retryable: true, message: 'ctr images import (containerd at ' + socket + ', namespace k8s.io) took none of its input for 0.3 s: is containerd stuck?' });
  }, 30_000);
});
