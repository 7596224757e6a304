import { describe, expect, it } from 'vitest';
import { parsePlatform } from '../../../src/runtime/containerd/index.js';
import { chainIds, formatPlatform, platformOfMachine } from '../../../src/runtime/index.js';

describe('platforms as runtimes report them', () => {
  it.each([
    ['x86_64', 'linux/amd64'],
    ['aarch64', 'linux/arm64/v8'],
    ['armv7l', 'linux/arm/v7'],
    ['armv6l', 'linux/arm/v6'],
    ['s390x', 'linux/s390x'],
  ])('a kernel machine name %s is %s', (machine, want) => {
    expect(formatPlatform(platformOfMachine('Linux', machine))).toBe(want);
  });

  it("ctr plugins ls's platform column parses with its variant", () => {
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/amd64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(() => parsePlatform('-')).toThrow(/not a platform/);
  });

  it('chain IDs follow the OCI image spec', () => {
    const a = 'sha256:' + 'a'.repeat(64);
    const b = 'sha256:' + 'b'.repeat(64);
    const [c1, c2] = chainIds([a, b]);
    expect(c1).toBe(a);
    // sha256("sha256:aaa… sha256:bbb…")
    expect(c2).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(c2).not.toBe(b);
  });
});
