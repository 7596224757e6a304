import { Readable } from 'node:stream';
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

/**
 * The legacy `docker save` layout that every `docker load` accepts, written as a stream with
 * back-pressure: each layer is opened only when the reader gets to it. A file that yields more or
 * fewer bytes than declared fails the stream.
 */
export function writeLoadArchive(spec: LoadArchiveSpec): Readable {
  const configName = `${spec.configDigest.slice('sha256:'.length)}.json`;
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: spec.repoTags, Layers: spec.layerPaths }]));
  async function* generate(): AsyncGenerator<Buffer> {
    yield encodeFileHeader(configName, spec.config.length);
    yield spec.config;
    yield padding(spec.config.length);
    for (const f of spec.files) {
      yield encodeFileHeader(f.name, f.size);
      let n = 0;
      for await (const chunk of await f.open()) {
        n += (chunk as Buffer).length;
        if (n > f.size) throw new TarportError('DIGEST_MISMATCH', `${f.name}: more than the ${f.size} bytes declared`);
        yield chunk as Buffer;
      }
      if (n !== f.size) throw new TarportError('DIGEST_MISMATCH', `${f.name}: ${n} bytes, expected ${f.size}`);
      yield padding(f.size);
    }
    // manifest.json last, as `docker save` writes it: it names only files already in the stream.
    yield encodeFileHeader('manifest.json', manifest.length);
    yield manifest;
    yield padding(manifest.length);
    yield Buffer.alloc(1024);
  }
  return Readable.from(generate(), { objectMode: false, highWaterMark: 1 << 20 });
}
