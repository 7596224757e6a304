// src/runtime/podman/libpod.ts: reading a libpod pull's answer.
import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../../src/errors.js';
import { LibpodClient, pullResult } from '../../../../src/runtime/podman/libpod.js';

const id = 'a3f827253b179141529d35a5aa2eb68700c174fe948be09055c2bb42f444503f';

describe('pullResult', () => {
  it("is the pulled image's ID, with the sha256: prefix", () => {
    const text = `{"stream":"Getting image source signatures\\n"}\n{"stream":"Writing manifest\\n"}\n{"images":["${id}"],"id":"${id}"}\n`;
    expect(pullResult(text)).toBe(`sha256:${id}`);
  });

  it('fails with the error line Podman sent, as a DAEMON error', () => {
    const text = `{"stream":"Trying to pull\\n"}\n{"error":"initializing source docker://127.0.0.1:1/x:load: connect: network is unreachable"}\n`;
    expect(() => pullResult(text)).toThrow("Podman's pull failed: initializing source docker://127.0.0.1:1/x:load: connect: network is unreachable");
    const thrown = (() => {
      try {
        pullResult(text);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(thrown).toBeInstanceOf(TarportError);
    expect((thrown as TarportError).code).toBe('DAEMON');
  });

  it('fails when no image ID came', () => {
    expect(() => pullResult('{"stream":"Writing manifest\\n"}\n')).toThrow('reported no image ID');
  });
});

describe('LibpodClient', () => {
  it('is local on a unix socket only', () => {
    expect(new LibpodClient('unix:///run/podman/podman.sock').local).toBe(true);
    expect(new LibpodClient('tcp://10.0.0.5:8080').local).toBe(false);
  });
});
