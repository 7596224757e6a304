import { describe, expect, it } from 'vitest';
import { keptFacts, type PageFacts } from '../../../src/repo/page-data.js';
import { recordFileName, recordKey } from '../../../src/repo/index.js';

const digest = `sha256:${'ab'.repeat(32)}`;
const facts: PageFacts = { name: 'team/app', tag: '1', version: 3, kind: 'image', size: 1, created: '2026-12-01T00:00:00Z', signer: null, signerUserId: null, encrypted: false, digest, platforms: ['linux/amd64'], layers: [] };

describe('keptFacts: a kept description is used only for the very record it describes', () => {
  const ref = { name: 'team/app', tag: '1', record: recordFileName(3, digest), version: 3 };
  const kept = (f: PageFacts) => new Map([[recordKey(ref.name, ref.tag, ref.record), f]]);

  it('the record named by version and digest prefix: used', () => {
    expect(keptFacts(kept(facts), ref)).toEqual(facts);
  });

  it('another digest, another version or another tag than the file name says: described again', () => {
    expect(keptFacts(kept({ ...facts, digest: `sha256:${'cd'.repeat(32)}` }), ref)).toBeUndefined();
    expect(keptFacts(kept({ ...facts, version: 4 }), ref)).toBeUndefined();
    expect(keptFacts(kept({ ...facts, tag: '2' }), ref)).toBeUndefined();
    expect(keptFacts(new Map(), ref)).toBeUndefined();
  });
});
