// src/cli/commands/pull.ts: the consumer's flags.
import { describe, expect, it } from 'vitest';
import { platformFlag } from '../../../../src/cli/commands/pull.js';

describe('--platform', () => {
  it('is taken as containerd spells it: what the state keeps and the loaded line says is one spelling per platform', () => {
    expect(platformFlag('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(platformFlag('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(platformFlag('linux/armhf')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(platformFlag('Linux/ARM64/V8')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(() => platformFlag('amd64')).toThrow('--platform "amd64": write os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8');
  });
});
