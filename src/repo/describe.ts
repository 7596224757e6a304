import { signatureIssuer, signatureUserId } from '../crypto/index.js';
import { hostsHolding, type Ack } from './acks.js';
import { recordKey } from './layout.js';
import { recordMembers, type ReleaseMember } from './platforms.js';
import { readRecord, readSignature, type ReleaseRef } from './read.js';
import type { ReleaseRecord } from './records.js';
import type { Store } from './store.js';

/** One release as `ls` and the page show it (unverified: what the files say, for a person). */
export interface ReleaseSummary {
  name: string;
  tag: string;
  version: number;
  kind: string;
  /** Bytes stored: layers and config. */
  size: number;
  created: string;
  /** The signing key's fingerprint as the signature claims it (unverified), or null. */
  signer: string | null;
  /** The signer's user id as the signature names it (unverified; absent from signatures made before tarport named it), or null. */
  signerUserId: string | null;
  /** Any layer or platform config is encrypted. */
  encrypted: boolean;
  /** The catalog names this very record. */
  current: boolean;
  /** The release record's digest: what the catalog names and a consumer checks. */
  digest: string;
  /** A multi-platform release's members (platform images, attestations, absent platforms); empty otherwise. */
  members: ReleaseMember[];
  /** The hosts whose acknowledgement (tarport/acks/) names this very release. */
  hosts: { host: string; hostname: string; loaded: string; runtime: string; platform: string }[];
  record: ReleaseRecord;
}

/**
 * One release, described once for every view of it: `current` holds the catalog's
 * "name:tag:record" entries.
 */
export async function describeRelease(store: Store, ref: ReleaseRef, current: ReadonlySet<string>, acks: readonly Ack[], signal?: AbortSignal): Promise<ReleaseSummary> {
  const { record, digest } = await readRecord(store, ref, undefined, signal ? { signal } : {});
  const sig = await readSignature(store, recordKey(ref.name, ref.tag, ref.record), signal);
  return {
    name: ref.name,
    tag: ref.tag,
    version: record.version,
    kind: record.kind,
    size: record.layers.reduce((n, l) => n + l.size, 0) + (record.config?.size ?? 0),
    created: record.created,
    signer: sig ? ((await signatureIssuer(sig)) ?? 'unreadable signature') : null,
    signerUserId: sig ? ((await signatureUserId(sig)) ?? null) : null,
    encrypted: record.layers.some((l) => l.encryption !== undefined) || (record.index?.platforms.some((p) => p.config.encryption !== undefined) ?? false),
    current: current.has(`${ref.name}:${ref.tag}:${ref.record}`),
    digest,
    members: recordMembers(record),
    hosts: hostsHolding(acks, ref.name, ref.tag, digest),
    record,
  };
}
