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

/**
 * The legacy `docker save` layout that every `docker load` accepts, written as a stream with
 * back-pressure: each layer is opened only when the reader gets to it. `manifest.json` comes last,
 * so a stream that fails on the way leaves the daemon without a manifest: it loads nothing.
 */
export function writeLoadArchive(spec: LoadArchiveSpec): Readable {
  const configName = `${spec.configDigest.slice('sha256:'.length)}.json`;
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: spec.repoTags, Layers: spec.layerPaths }]));
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  const put = async (buf: Buffer) => {
    if (buf.length > 0 && !out.write(buf)) await once(out, 'drain');
  };
  const putFile = async (name: string, data: Buffer) => {
    await put(encodeFileHeader(name, data.length));
    await put(data);
    await put(padding(data.length));
  };
  (async () => {
    await putFile(configName, spec.config);
    for (const f of spec.files) {
      await put(encodeFileHeader(f.name, f.size));
      await pipeline(await f.open(), exactly(f.size, f.name), out, { end: false });
      await put(padding(f.size));
    }
    await putFile('manifest.json', manifest);
    await put(Buffer.alloc(1024));
    out.end();
  })().catch((e: unknown) => out.destroy(e as Error));
  return out;
}
