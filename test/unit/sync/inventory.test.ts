import { describe, expect, it } from 'vitest';
import { TarportError } from '../../../src/errors.js';
import { parseInventory } from '../../../src/sync/inventory.js';

function refusal(text: string): TarportError {
  try {
    parseInventory(text, 'site.json');
  } catch (e) {
    if (e instanceof TarportError) return e;
    throw e;
  }
  throw new Error('accepted');
}

describe('parseInventory', () => {
  it('reads an inventory and fills in the lists a site may leave out', () => {
    const inv = parseInventory(JSON.stringify({ schema: 'tarport.inventory/v1', created: '2026-01-01T00:00:00Z', source: 'site-b', diffIds: ['sha256:aa'] }), 'site.json');
    expect(inv).toEqual({ schema: 'tarport.inventory/v1', created: '2026-01-01T00:00:00Z', source: 'site-b', diffIds: ['sha256:aa'], chainIds: [], objects: [], releases: {} });
  });

  it('refuses text that is not JSON, naming the file', () => {
    const e = refusal('{"schema": ');
    expect(e.code).toBe('BAD_INPUT');
    expect(e.message).toMatch(/^inventory site\.json is not valid JSON \(/);
  });

  it('refuses another document, listing every bad field by its path', () => {
    const e = refusal(JSON.stringify({ schema: 'tarport.inventory/v2', created: 1, source: 's', releases: { 'app:1': 'sha256:aa' }, extra: true }));
    expect(e.code).toBe('BAD_INPUT');
    expect(e.message).toMatch(/^inventory site\.json is not a tarport inventory \(/);
    for (const field of ['schema: ', 'created: ', 'releases.app:1: ']) expect(e.message).toContain(field);
    expect(e.message).toMatch(/extra/); // unknown keys are refused: usually a typo
  });
});
