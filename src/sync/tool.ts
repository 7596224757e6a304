// The tool crosses the gap with the images: `sync --with-tool FILE` puts tarport itself (the single
// executable, or the npm package) on the stick, in a folder beside the repository's own files:
//
//   <DST>/tarport-tool/<file>...        what the producer handed over, byte for byte
//   <DST>/tarport-tool/README.txt       how to check it before the first run
//   <DST>/tarport-tool/SHA256SUMS       `sha256sum -c SHA256SUMS` checks every file above
//   <DST>/tarport-tool/SHA256SUMS.asc   `gpg --verify SHA256SUMS.asc SHA256SUMS` (with --sign-key)
//
// The folder is no part of the repository format: readers, check and gc never look at it. It holds
// exactly one delivery: files of an earlier delivery that this one does not carry are removed, so that
// a signature never covers a file the producer did not hand over this time (a stick that came back
// from the low side may carry anything).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { TarportError, wrapSystemError } from '../errors.js';
import type { Transport } from '../transport/index.js';

export const TOOL_FOLDER = 'tarport-tool';
export const SUMS_FILE = 'SHA256SUMS';
export const SUMS_SIGNATURE = 'SHA256SUMS.asc';
const README = 'README.txt';

/** A file to carry, as found on this host. */
export interface ToolFile {
  readonly path: string;
  readonly name: string;
  readonly size: number;
  readonly sha256: string;
}

export interface ToolOptions {
  /** Signs SHA256SUMS (a detached, armored OpenPGP signature); without it the sums are unsigned. */
  readonly sign?: (data: Buffer) => Promise<Buffer>;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: ToolEvent) => void;
}

export type ToolEvent =
  | { kind: 'tool'; name: string; size: number; sha256: string }
  | { kind: 'tool-removed'; name: string }
  | { kind: 'tool-sums'; signed: boolean };

export interface ToolResult {
  readonly folder: string;
  readonly files: readonly ToolFile[];
  readonly signed: boolean;
}

/**
 * Reads and hashes the files to carry, before anything is written anywhere: a missing file or a
 * name that cannot live on a FAT32 stick stops the run with the file's name.
 */
export async function readToolFiles(paths: readonly string[], signal?: AbortSignal): Promise<ToolFile[]> {
  const out: ToolFile[] = [];
  for (const path of paths) {
    const name = basename(path);
    checkName(name, path);
    if (out.some((f) => f.name === name)) throw new TarportError('USAGE', `--with-tool ${path}: another file of that name (${name}) is already carried`);
    const st = await stat(path).catch((e: unknown) => {
      throw new TarportError('BAD_INPUT', `--with-tool ${path}: ${wrapSystemError(e, 'cannot read it').message}`, { cause: e });
    });
    if (!st.isFile()) throw new TarportError('BAD_INPUT', `--with-tool ${path}: not a regular file`);
    out.push({ path, name, size: st.size, sha256: await hashFile(path, signal) });
  }
  return out;
}

/** Writes one delivery of the tool into DST's tarport-tool/ (see the head of this file). */
export async function putTool(dst: Transport, files: readonly ToolFile[], opts: ToolOptions = {}): Promise<ToolResult> {
  const { signal } = opts;
  for (const f of files) {
    await putAtomically(dst, f.name, { file: f.path }, signal);
    opts.onEvent?.({ kind: 'tool', name: f.name, size: f.size, sha256: f.sha256 });
  }
  const readme = Buffer.from(readmeText(files, !!opts.sign));
  await putAtomically(dst, README, () => Readable.from([readme]), signal);
  await removeStale(dst, files, opts);
  const sums = Buffer.from(
    [...files.map((f) => ({ name: f.name, sha256: f.sha256 })), { name: README, sha256: createHash('sha256').update(readme).digest('hex') }]
      .map((e) => `${e.sha256}  ${e.name}\n`)
      .join(''),
  );
  // the sums before their signature: a run cut in between leaves a signature that fails, never one
  // that vouches for other files
  await putAtomically(dst, SUMS_FILE, () => Readable.from([sums]), signal);
  if (opts.sign) {
    const sig = await opts.sign(sums);
    await putAtomically(dst, SUMS_SIGNATURE, () => Readable.from([sig]), signal);
  } else {
    await dst.remove(`${TOOL_FOLDER}/${SUMS_SIGNATURE}`, signal);
  }
  opts.onEvent?.({ kind: 'tool-sums', signed: !!opts.sign });
  return { folder: `${dst.location.replace(/\/$/, '')}/${TOOL_FOLDER}`, files, signed: !!opts.sign };
}

/** Files an earlier delivery left that this one does not carry. */
async function removeStale(dst: Transport, files: readonly ToolFile[], opts: ToolOptions): Promise<void> {
  const keep = new Set([...files.map((f) => f.name), README, SUMS_FILE, SUMS_SIGNATURE]);
  const stale: string[] = [];
  for await (const o of dst.list(TOOL_FOLDER, opts.signal)) if (!o.isDir && !keep.has(o.name)) stale.push(o.name);
  for (const name of stale) {
    await dst.remove(`${TOOL_FOLDER}/${name}`, opts.signal);
    opts.onEvent?.({ kind: 'tool-removed', name });
  }
}

/** Written under a temporary name in the same folder, then renamed: never half a tool under its name. */
async function putAtomically(dst: Transport, name: string, source: Parameters<Transport['write']>[1], signal?: AbortSignal): Promise<void> {
  const tmp = `${TOOL_FOLDER}/.${name}.${process.pid}.tmp`;
  try {
    await dst.write(tmp, source, signal ? { signal } : {});
    await dst.rename(tmp, `${TOOL_FOLDER}/${name}`, signal);
  } catch (e) {
    await dst.remove(tmp).catch(() => undefined);
    throw e;
  }
}

async function hashFile(path: string, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  try {
    for await (const c of createReadStream(path, { highWaterMark: 1 << 20, ...(signal ? { signal } : {}) })) h.update(c as Buffer);
  } catch (e) {
    throw new TarportError('BAD_INPUT', `--with-tool ${path}: ${wrapSystemError(e, 'cannot read it').message}`, { cause: e });
  }
  return h.digest('hex');
}

/** A name that FAT32, exFAT and NTFS accept and sha256sum -c reads back unchanged. */
function checkName(name: string, path: string): void {
  const bad = /[\\/:*?"<>|\s\x00-\x1f]/.test(name) || name.startsWith('.') || /[. ]$/.test(name);
  if (bad || [README, SUMS_FILE, SUMS_SIGNATURE].includes(name)) {
    throw new TarportError('USAGE', `--with-tool ${path}: the name ${JSON.stringify(name)} cannot be carried (no spaces, no \\ / : * ? " < > |, no leading or trailing dot, not ${README} or ${SUMS_FILE}); rename the file`);
  }
}

function readmeText(files: readonly ToolFile[], signed: boolean): string {
  const check = signed
    ? ['gpg --verify SHA256SUMS.asc SHA256SUMS     # must say "Good signature" from the producer key you trust', 'sha256sum -c SHA256SUMS                    # every file must say OK']
    : ['sha256sum -c SHA256SUMS                    # every file must say OK (SHA256SUMS is not signed: compare it with a copy you trust)'];
  return [
    'tarport, carried with the images. Check it before the first run (docs/install.md):',
    '',
    '  cd tarport-tool',
    ...check.map((l) => `  ${l}`),
    '',
    'then install the file you need:',
    ...files.map((f) => `  ${f.name}  (${f.size} bytes)`),
    '',
    '  tarport-linux-<arch>: a single executable: install -m 755 tarport-linux-x64 /usr/local/bin/tarport',
    '  tarport-<version>.tgz: the npm package (Node >= 20.19): npm install -g ./tarport-<version>.tgz',
    '',
  ].join('\n');
}
