// src/runtime/podman/registry.ts: the loopback registry Podman pulls a verified image from.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LoopbackRegistry, Turns, inTurn, type ServedImage } from '../../../../src/runtime/podman/registry.js';

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const manifestBytes = Buffer.from('{"schemaVersion":2}');
const configBytes = Buffer.from('{"config":1}');
const layerBytes = Buffer.alloc(300_000, 7);
const failing = `sha256:${'f'.repeat(64)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function image(): ServedImage {
  return {
    manifest: { digest: digestOf(manifestBytes), size: manifestBytes.length, mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes: manifestBytes },
    blobs: [
      { digest: digestOf(configBytes), size: configBytes.length, mediaType: 'application/vnd.oci.image.config.v1+json', bytes: configBytes },
      { digest: digestOf(layerBytes), size: layerBytes.length, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', open: async () => Readable.from([layerBytes.subarray(0, 1000), layerBytes.subarray(1000)]) },
      { digest: failing, size: 10, mediaType: 'application/vnd.oci.image.layer.v1.tar', open: async () => Promise.reject(new Error('the fetch of this object failed')) },
    ],
  };
}

let reg: LoopbackRegistry | undefined;
afterEach(async () => {
  await reg?.close();
  reg = undefined;
});

async function get(path: string, method = 'GET'): Promise<{ status: number; type: string | null; digest: string | null; length: string | null; body: Buffer }> {
  const res = await fetch(`http://${reg!.host}${path}`, { method });
  return { status: res.status, type: res.headers.get('content-type'), digest: res.headers.get('docker-content-digest'), length: res.headers.get('content-length'), body: Buffer.from(await res.arrayBuffer()) };
}

describe('LoopbackRegistry', () => {
  it('listens on 127.0.0.1 under a random repository name, and answers the API version check', async () => {
    reg = await LoopbackRegistry.start(image());
    const other = await LoopbackRegistry.start(image());
    await other.close();
    expect(reg.host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(reg.repository).toMatch(/^tarport-load-[0-9a-f]{32}$/);
    expect(other.repository).not.toBe(reg.repository);
    expect(reg.reference).toBe(`${reg.host}/${reg.repository}:load`);
    expect((await get('/v2/')).status).toBe(200);
  });

  it('a fault of its listening server (an accept that failed) is kept for the load\'s report, each time heard, never thrown', async () => {
    reg = await LoopbackRegistry.start(image());
    const server = (reg as unknown as { server: EventEmitter }).server;
    const accept = Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' });
    expect(() => server.emit('error', accept)).not.toThrow();
    expect(() => server.emit('error', new Error('accept ENFILE'))).not.toThrow();
    expect(reg.serverFault).toBe(accept);
    expect((await get('/v2/')).status).toBe(200);
  });

  it('serves the manifest by its tag and by its digest, with its media type and digest', async () => {
    reg = await LoopbackRegistry.start(image());
    for (const ref of ['load', digestOf(manifestBytes)]) {
      const r = await get(`/v2/${reg.repository}/manifests/${ref}`);
      expect(r.status).toBe(200);
      expect(r.type).toBe('application/vnd.oci.image.manifest.v1+json');
      expect(r.digest).toBe(digestOf(manifestBytes));
      expect(r.body.equals(manifestBytes)).toBe(true);
    }
    expect((await get(`/v2/${reg.repository}/manifests/latest`)).status).toBe(404);
  });

  it('serves blobs from memory and from streams, HEAD without a body, and counts what it sent', async () => {
    reg = await LoopbackRegistry.start(image());
    const head = await get(`/v2/${reg.repository}/blobs/${digestOf(layerBytes)}`, 'HEAD');
    expect([head.status, head.length, head.body.length]).toEqual([200, String(layerBytes.length), 0]);
    const layer = await get(`/v2/${reg.repository}/blobs/${digestOf(layerBytes)}`);
    expect(layer.body.equals(layerBytes)).toBe(true);
    const config = await get(`/v2/${reg.repository}/blobs/${digestOf(configBytes)}`);
    expect(config.body.equals(configBytes)).toBe(true);
    expect(reg.traffic.bytesSent).toBe(layerBytes.length + configBytes.length);
    expect([...reg.traffic.blobsSent].sort()).toEqual([digestOf(configBytes), digestOf(layerBytes)].sort());
    expect(reg.traffic.requests).toBe(3);
  });

  it('gives each chunk of a releasing stream back once the socket took it, and the bytes arrive whole', async () => {
    const chunks = [Buffer.alloc(1 << 20, 1), Buffer.alloc(1 << 20, 2), Buffer.alloc(5, 3)];
    const body = Buffer.concat(chunks);
    const released: Buffer[] = [];
    const open = async () => Object.assign(Readable.from(chunks), { release: (c: Buffer) => void released.push(c) });
    reg = await LoopbackRegistry.start({ ...image(), blobs: [{ digest: digestOf(body), size: body.length, mediaType: 'application/vnd.oci.image.layer.v1.tar', open }] });
    const r = await get(`/v2/${reg.repository}/blobs/${digestOf(body)}`);
    expect(r.body.equals(body)).toBe(true);
    // the very buffers the stream gave, each once (a write's callback may follow the last byte's arrival)
    await vi.waitFor(() => expect(released).toHaveLength(3));
    expect(released.every((c, i) => c === chunks[i])).toBe(true);
    expect(reg.traffic.blobsSent.has(digestOf(body))).toBe(true);
  });

  it('knows no other repository or blob, and takes no writes', async () => {
    reg = await LoopbackRegistry.start(image());
    expect((await get(`/v2/library/busybox/manifests/load`)).status).toBe(404);
    expect((await get(`/v2/${reg.repository}/blobs/sha256:${'0'.repeat(64)}`)).status).toBe(404);
    expect((await get(`/v2/${reg.repository}/blobs/%E0%A4%A`)).status).toBe(404);
    expect((await get(`/v2/${reg.repository}/blobs/uploads/`, 'POST')).status).toBe(405);
  });

  it('answers 500 for a blob that cannot be opened, and keeps that fault for the caller', async () => {
    reg = await LoopbackRegistry.start(image());
    const r = await get(`/v2/${reg.repository}/blobs/${failing}`);
    expect(r.status).toBe(500);
    expect((reg.traffic.fault as Error).message).toBe('the fetch of this object failed');
    expect(reg.traffic.blobsSent.has(failing)).toBe(false);
  });

  it('is gone once closed', async () => {
    reg = await LoopbackRegistry.start(image());
    const host = reg.host;
    await reg.close();
    reg = undefined;
    await expect(fetch(`http://${host}/v2/`)).rejects.toThrow('fetch failed');
  });
});

describe('Turns: the streams of a pull share this thread earliest layer first', () => {
  it('a later stream waits while an earlier one has the thread, and goes once the earlier one waits on its socket past the patience', async () => {
    const turns = new Turns(30);
    const late = turns.join(3);
    const early = turns.join(1);
    const went: string[] = [];
    turns.next(late, () => went.push('late'));
    turns.next(early, () => went.push('early'));
    expect(went).toEqual(['early']);
    turns.wait(early); // its socket did not take its last chunk at once
    await sleep(10);
    expect(went).toEqual(['early']);
    await vi.waitFor(() => expect(went).toEqual(['early', 'late']), { timeout: 2000, interval: 5 });
  });

  it('a stream that ended lets the next one go; a repeated request of a blob comes after the first', async () => {
    const turns = new Turns(60_000);
    const first = turns.join(2);
    const again = turns.join(2);
    const later = turns.join(4);
    const went: string[] = [];
    turns.next(later, () => went.push('later'));
    turns.next(again, () => went.push('again'));
    turns.next(first, () => went.push('first'));
    expect(went).toEqual(['first']);
    turns.leave(first);
    await vi.waitFor(() => expect(went).toEqual(['first', 'again']));
    turns.leave(again);
    await vi.waitFor(() => expect(went).toEqual(['first', 'again', 'later']));
  });
});

describe('inTurn: a blob written to its response in its turn', () => {
  /** A response whose socket takes every write; `close` can be sent before end() calls back. */
  function response(): { res: ServerResponse; written: Buffer[]; ended: () => boolean } {
    const e = new EventEmitter();
    const written: Buffer[] = [];
    let ended = false;
    const res = Object.assign(e, {
      writableFinished: false,
      write: (c: Buffer, cb: (err?: Error | null) => void) => (written.push(c), setImmediate(() => cb()), true),
      end: (cb: () => void) => void setTimeout(() => ((ended = true), cb()), 50),
    });
    return { res: res as unknown as ServerResponse, written, ended: () => ended };
  }

  it('its last chunk does not wait for its turn, and a puller that closes once it has every byte is no fault', async () => {
    const turns = new Turns(60_000);
    turns.join(0); // an earlier layer that has the thread for as long as this test runs
    const late = turns.join(1);
    const { res, written } = response();
    const w = inTurn(res, 6, turns, late);
    const done = pipeline(Readable.from([Buffer.from('abc'), Buffer.from('def')]), w);
    // its first chunk waits for the earlier layer; the test lets it go as that layer's socket would
    await vi.waitFor(() => expect(late.parked).toBeDefined());
    late.parked!();
    late.parked = undefined;
    await vi.waitFor(() => expect(Buffer.concat(written).toString()).toBe('abcdef'));
    await new Promise((r) => setImmediate(r)); // the socket's callback for the last write ran
    res.emit('close'); // before end() called back: the puller had it all and hung up
    await expect(done).resolves.toBeUndefined();
  });

  it('a stream starves from its join to its first chunk and while it waits for its source, not while it waits on its socket', async () => {
    const turns = new Turns(60_000);
    const t = turns.join(0);
    expect(turns.starving()).toBe(true); // its blob is still opening (a download not begun)
    // a socket that takes nothing until the test says so
    let sent: (() => void) | undefined;
    const res = Object.assign(new EventEmitter(), {
      writableFinished: false,
      write: (_c: Buffer, cb: () => void) => ((sent = cb), false),
      end: (cb: () => void) => void setImmediate(cb),
    }) as unknown as ServerResponse;
    const src = new Readable({ read() {} });
    const done = pipeline(src, inTurn(res, 6, turns, t));
    src.push(Buffer.from('abc'));
    await vi.waitFor(() => expect(sent).toBeDefined());
    expect(turns.starving()).toBe(false); // its socket is full: the puller's silence, not the source's
    sent!();
    expect(turns.starving()).toBe(true); // the socket took it; no next chunk yet
    sent = undefined;
    src.push(Buffer.from('def'));
    src.push(null);
    await vi.waitFor(() => expect(sent).toBeDefined());
    expect(turns.starving()).toBe(false);
    sent!();
    await done;
    expect(turns.starving()).toBe(false);
  });

  it('a puller that closes before it has every byte fails the copy', async () => {
    const turns = new Turns(60_000);
    turns.join(0);
    const late = turns.join(1);
    const { res } = response();
    const done = pipeline(Readable.from([Buffer.from('abc'), Buffer.from('def')]), inTurn(res, 6, turns, late));
    await vi.waitFor(() => expect(late.parked).toBeDefined());
    res.emit('close');
    await expect(done).rejects.toThrow('the puller closed the connection before the blob was sent');
  });
});

describe('LoopbackRegistry streams the layers of a pull in the manifest order', () => {
  const layerOf = (mib: number, fill: number) => {
    const body = Buffer.alloc(mib << 20, fill);
    const blob = { digest: digestOf(body), size: body.length, mediaType: 'application/vnd.oci.image.layer.v1.tar', open: async () => Readable.from(Array.from({ length: mib }, (_, i) => body.subarray(i << 20, (i + 1) << 20))) };
    return { body, blob };
  };

  it('a puller that reads every layer at once gets the earliest whole first, though it asked for it last', async () => {
    // the earlier layer is the larger: shared out evenly, the later one would end first
    const early = layerOf(32, 1);
    const late = layerOf(8, 2);
    // the later layer has begun (its first MiB sent) when the earlier one is asked for, whatever the
    // machine's load: its next chunks come only once the earlier layer was opened
    let earlyAsked!: () => void;
    const asked = new Promise<void>((r) => (earlyAsked = r));
    const lateBlob = {
      ...late.blob,
      open: async () =>
        Readable.from(
          (async function* () {
            yield late.body.subarray(0, 1 << 20);
            await asked;
            for (let i = 1; i < 8; i++) yield late.body.subarray(i << 20, (i + 1) << 20);
          })(),
        ),
    };
    // and the earlier layer takes a while to open (a file on a slow disk): the later must not run ahead meanwhile
    const earlyBlob = { ...early.blob, open: async () => (earlyAsked(), await new Promise((r) => setTimeout(r, 1000)), early.blob.open()) };
    // a patience no load reaches: the order is the turns', not the timers'
    reg = await LoopbackRegistry.start({ ...image(), blobs: [earlyBlob, lateBlob] }, { patienceMs: 20_000 });
    const read = (l: typeof early) => get(`/v2/${reg!.repository}/blobs/${l.blob.digest}`);
    const lateRead = read(late);
    await vi.waitFor(() => expect(reg!.traffic.bytesSent).toBeGreaterThanOrEqual(1 << 20));
    const [a, b] = await Promise.all([read(early), lateRead]);
    // the order in which the registry handed each layer's last chunk to its socket (lastChunks):
    // when each response finished, and what the puller's own reads end in, also depend on how much
    // of each the sockets' buffers hold, megabytes on loopback, and on a busy machine they flaked
    expect(reg.traffic.lastChunks).toEqual([early.blob.digest, late.blob.digest]);
    expect(new Set(reg.traffic.blobsSent)).toEqual(new Set([early.blob.digest, late.blob.digest]));
    expect(a.body.equals(early.body) && b.body.equals(late.body)).toBe(true);
  });

  it('a puller that reads one layer at a time, the latest first, is served all the same', async () => {
    const early = layerOf(32, 3);
    const late = layerOf(8, 4);
    reg = await LoopbackRegistry.start({ ...image(), blobs: [early.blob, late.blob] });
    const [e, l] = await Promise.all([early, late].map((x) => fetch(`http://${reg!.host}/v2/${reg!.repository}/blobs/${x.blob.digest}`)));
    // the earliest layer's socket fills up unread: after the patience the later one goes on
    expect(Buffer.from(await l!.arrayBuffer()).equals(late.body)).toBe(true);
    expect(Buffer.from(await e!.arrayBuffer()).equals(early.body)).toBe(true);
  });
});
