import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarportError } from '../errors.js';
import { encodeFileHeader, padding } from './tarheader.js';

/** A file to put into a load archive, opened only when its turn comes. */
export interface LoadFile {
  readonly name: string;
  readonly size: number;
  readonly open: () => Promise<Readable>;
}

export interface LoadArchiveSpec {
  /** The image config, stored as `<hex>.json`. */
  readonly configDigest: string;
  readonly config: Buffer;
  readonly repoTags: readonly string[];
  /** One path per diff_id, in order (`<diffhex>/layer.tar`); files may leave some out (partial load). */
  readonly layerPaths: readonly string[];
  /** The layer files to include; each path at most once. */
  readonly files: readonly LoadFile[];
}

/** Fails when a file yields more or fewer bytes than its tar header declared. */
function exactly(size: number, name: string): Transform {
  let n = 0;
  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb) {
      n += chunk.length;
      if (n > size) cb(new TarportError('DIGEST_MISMATCH', `${name}: more than the ${size} bytes declared`));
      else cb(null, chunk);
    },
    flush(cb) {
      cb(n === size ? null : new TarportError('DIGEST_MISMATCH', `${name}: ${n} bytes, expected ${size}`));
    },
  });
}

/** What an OCI-layout load archive holds: one image, its layers uncompressed. */
export interface OciLoadArchiveSpec {
  readonly configDigest: string;
  readonly config: Buffer;
  /** The full name the runtime stores (`docker.io/library/app:1`). */
  readonly imageName: string;
  /**
   * Every layer blob of the image, in order: its digest and size, and its media type (default: an
   * uncompressed tar, whose digest is the diff ID; a compressed blob, as the repository stores it,
   * names its compression, and the runtime decompresses it as it unpacks).
   */
  readonly layers: readonly { readonly digest: string; readonly size: number; readonly mediaType?: string }[];
  /** The layer blobs to include (name `blobs/sha256/<digest hex>`); the runtime has the others. */
  readonly files: readonly LoadFile[];
}

/** The OCI media type of a layer blob stored with this compression. */
export function ociLayerMediaType(compression: 'none' | 'gzip' | 'zstd'): string {
  return compression === 'none' ? OCI_LAYER_TAR : `${OCI_LAYER_TAR}+${compression}`;
}
const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';

/** The manifest of an OCI-layout load archive (an uncompressed layer's blob digest is its diff ID). */
export function ociLoadManifest(spec: Pick<OciLoadArchiveSpec, 'configDigest' | 'config' | 'layers'>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: spec.configDigest, size: spec.config.length },
      layers: spec.layers.map((l) => ({ mediaType: l.mediaType ?? OCI_LAYER_TAR, digest: l.digest, size: l.size })),
    }),
  );
}

export const ociBlobPath = (digest: string) => `blobs/sha256/${digest.slice('sha256:'.length)}`;

/**
 * An OCI image layout that containerd's importer (`ctr images import`) accepts, as a stream.
 * Unlike a `docker save` archive, its manifest names layers by digest, so a blob the runtime's
 * content store already holds may be left out. `index.json` comes last: a stream that fails on the
 * way leaves the importer without an index, and it creates no image.
 */
export function writeOciLoadArchive(spec: OciLoadArchiveSpec): { stream: Readable; manifestDigest: string } {
  const manifest = ociLoadManifest(spec);
  const manifestDigest = 'sha256:' + createHash('sha256').update(manifest).digest('hex');
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: manifest.length,
          // containerd's importer reads the first, Podman (containers/image's oci-archive) the
          // second: as a bare tag it would store `localhost/1:latest`, so both are the full name
          annotations: { 'io.containerd.image.name': spec.imageName, 'org.opencontainers.image.ref.name': spec.imageName },
        },
      ],
    }),
  );
  const head: [string, Buffer][] = [
    ['oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}')],
    [ociBlobPath(spec.configDigest), spec.config],
    [ociBlobPath(manifestDigest), manifest],
  ];
  return { stream: tarStream(head, spec.files, [['index.json', index]]), manifestDigest };
}

/** Small files first, then the streamed files, then the small files that must come last. */
function tarStream(head: readonly [string, Buffer][], files: readonly LoadFile[], tail: readonly [string, Buffer][]): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  // a reader that goes away (the load was cut) ends the wait for room, and with it the writing
  const gone = new AbortController();
  out.once('close', () => gone.abort());
  // The writing starts before the runtime's request reads the archive: a layer that fails in that
  // moment (a tampered object read in place fails at once) destroys `out` with no reader listening,
  // and an 'error' without a listener would end the agent. The fault stays on the stream: a reader
  // that comes later gets it from its pipeline or iterator (Node hands them a destroyed stream's error).
  out.on('error', () => undefined);
  const put = async (buf: Buffer) => {
    if (out.destroyed) throw new TarportError('INTERNAL', 'the load archive was closed by its reader');
    if (buf.length > 0 && !out.write(buf)) await once(out, 'drain', { signal: gone.signal });
  };
  const putFile = async (name: string, data: Buffer) => {
    await put(encodeFileHeader(name, data.length));
    await put(data);
    await put(padding(data.length));
  };
  (async () => {
    for (const [name, data] of head) await putFile(name, data);
    for (const f of files) {
      await put(encodeFileHeader(f.name, f.size));
      // through put, not piped into out: a pipeline into out per layer (end: false) leaves its
      // listeners on out, and an image of more than 10 layers made Node warn of a leak
      await pipeline(await f.open(), exactly(f.size, f.name), async (body: AsyncIterable<Buffer>) => {
        for await (const c of body) await put(c);
      });
      await put(padding(f.size));
    }
    for (const [name, data] of tail) await putFile(name, data);
    await put(Buffer.alloc(1024));
    out.end();
  })().catch((e: unknown) => out.destroy(e as Error));
  return out;
}

/**
 * The legacy `docker save` layout that every `docker load` accepts, written as a stream with
 * back-pressure: each layer is opened only when the reader gets to it. `manifest.json` comes last,
 * so a stream that fails on the way leaves the daemon without a manifest: it loads nothing.
 */
export function writeLoadArchive(spec: LoadArchiveSpec): Readable {
  const configName = `${spec.configDigest.slice('sha256:'.length)}.json`;
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: spec.repoTags, Layers: spec.layerPaths }]));
  return tarStream([[configName, spec.config]], spec.files, [['manifest.json', manifest]]);
}
