// The one tar decoder of tarport (ustar, GNU long names, pax): it turns header blocks into entries and
// refuses what no tool that writes images writes. It does no I/O: tar.ts feeds it blocks, whether it
// seeks through a plain archive or reads a decompressed stream.

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'device' | 'fifo' | 'other';

export interface RawHeader {
  name: string;
  size: number;
  typeflag: string;
  linkname: string;
}

/** A header that is not tar, or an entry no image tool writes: the caller names the archive. */
export class TarFormatError extends Error {}

/** What the decoder accepts; beyond these an archive is refused, whatever it claims. */
export const HEADER_LIMITS = {
  /** A GNU long name or link, or a pax path: PATH_MAX is 4096; this leaves room and stops megabytes. */
  longName: 64 << 10,
  /** A pax extended header (xattrs, SELinux labels and long names fit many times over). */
  pax: 1 << 20,
  /** Extended headers in a row before an entry (pax + long name + long link need 3). */
  chain: 16,
} as const;

function cstr(buf: Buffer, start: number, len: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end < 0 || end > start + len ? start + len : end);
}

function numeric(buf: Buffer, start: number, len: number): number {
  if ((buf[start]! & 0x80) !== 0) {
    // GNU base-256: big-endian, the first byte's high bit is the marker and the next one the sign
    if ((buf[start]! & 0x40) !== 0) throw new TarFormatError('negative number in a header field');
    let v = buf[start]! & 0x3f;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + buf[i]!;
    if (!Number.isSafeInteger(v)) throw new TarFormatError('number too large in a header field');
    return v;
  }
  // octal digits, maybe with leading spaces, ended by a space or NUL (parsed by hand: this runs twice
  // per header, and an archive may hold a million headers)
  let i = start;
  const end = start + len;
  while (i < end && buf[i] === 0x20) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++, digits++) {
    const c = buf[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new TarFormatError(`invalid octal number ${JSON.stringify(buf.toString('latin1', start, end).replace(/\0.*$/s, ''))}`);
    v = v * 8 + (c - 0x30);
  }
  for (; i < end; i++) {
    if (buf[i] !== 0 && buf[i] !== 0x20) throw new TarFormatError(`invalid octal number ${JSON.stringify(buf.toString('latin1', start, end).replace(/\0.*$/s, ''))}`);
  }
  return digits === 0 ? 0 : v;
}

export function isZeroBlock(buf: Buffer): boolean {
  for (let i = 0; i < 512; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Whether a 512-byte block reads as a tar header (its checksum holds). */
export function isTarHeader(buf: Buffer): boolean {
  try {
    decodeHeader(buf);
    return true;
  } catch {
    return false;
  }
}

/** Decodes one 512-byte header block; throws TarFormatError when it is not a tar header. */
export function decodeHeader(buf: Buffer): RawHeader {
  const stored = numeric(buf, 148, 8);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : buf[i]!;
  if (sum !== stored) throw new TarFormatError('header checksum mismatch');
  let name = cstr(buf, 0, 100);
  const magic = buf.toString('latin1', 257, 263);
  if (magic === 'ustar\0') {
    const prefix = cstr(buf, 345, 155);
    if (prefix) name = `${prefix}/${name}`;
  }
  return {
    name,
    size: numeric(buf, 124, 12),
    typeflag: String.fromCharCode(buf[156] || 48),
    linkname: cstr(buf, 157, 100),
  };
}

/** Parses pax extended header records ("len key=value\n"). */
export function decodePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    if (sp < 0 || sp - pos > 12) throw new TarFormatError('invalid pax record');
    const digits = data.toString('latin1', pos, sp);
    const len = /^[0-9]+$/.test(digits) ? parseInt(digits, 10) : NaN;
    if (!Number.isFinite(len) || len <= sp - pos + 1 || pos + len > data.length) throw new TarFormatError('invalid pax record');
    const rec = data.toString('utf8', sp + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

export function entryType(typeflag: string): EntryType {
  switch (typeflag) {
    case '0':
    case '7':
    case 'S': // GNU sparse: a file whose data is stored in pieces (flagged, see DecodedEntry.sparse)
      return 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '5':
      return 'dir';
    case '3':
    case '4':
      return 'device';
    case '6':
      return 'fifo';
    default:
      return 'other';
  }
}

/** An empty or '.' component anywhere: a leading './' or '/', a '//' or '/./', a trailing '/' or '/.'. */
const UNUSUAL_SPELLING = /(?:^|\/)\.?(?:\/|$)/;

/**
 * Normalizes an entry name as posix.normalize would ('..' never gets here: leavesRoot refuses it):
 * no empty or '.' component. Every spelling of a path must be one name, or a second entry for it
 * escapes the duplicate-entry refusal while docker load, which unpacks the whole tar, keeps the last.
 */
export function normalizeName(name: string): string {
  // the common name needs no work: this runs once per header, and an archive may hold a million
  if (!UNUSUAL_SPELLING.test(name)) return name;
  return name
    .split('/')
    .filter((c) => c !== '' && c !== '.')
    .join('/');
}

/** Why a path (an entry's name, a hard link's target) would leave the archive's root, or undefined. */
export function leavesRoot(raw: string): string | undefined {
  if (raw.startsWith('/')) return 'is an absolute path';
  if (raw.includes('..') && raw.split('/').includes('..')) return "has a '..' component";
  return undefined;
}

export interface DecodedEntry {
  /** Normalized name. */
  readonly name: string;
  readonly type: EntryType;
  /** Bytes of data stored after the header (what to skip). */
  readonly size: number;
  readonly linkname: string;
  /** GNU or pax sparse: the stored bytes are not the file's bytes. */
  readonly sparse: boolean;
}

export type Step =
  /** An extended header: read `size` bytes of data, hand them to meta(), then skip the padding. */
  | { readonly meta: true; readonly size: number }
  | { readonly meta: false; readonly entry: DecodedEntry };

const NO_PAX: Readonly<Record<string, string>> = Object.freeze({});

/**
 * Turns header blocks into entries. Extended headers (pax, GNU long name and link) apply to the entry
 * that follows them; their sizes, their number in a row and every size they declare are checked
 * before a byte of them is read.
 */
export class HeaderDecoder {
  private pax: Record<string, string> = NO_PAX;
  private longName: string | undefined;
  private longLink: string | undefined;
  private pending: string | undefined;
  private chain = 0;

  header(block: Buffer): Step {
    const h = decodeHeader(block);
    const t = h.typeflag;
    if (t === 'x' || t === 'g' || t === 'L' || t === 'K') {
      if (++this.chain > HEADER_LIMITS.chain) throw new TarFormatError(`more than ${HEADER_LIMITS.chain} extended headers in a row`);
      const cap = t === 'L' || t === 'K' ? HEADER_LIMITS.longName : HEADER_LIMITS.pax;
      const what = t === 'L' ? 'GNU long name' : t === 'K' ? 'GNU long link' : 'pax header';
      if (h.size > cap) throw new TarFormatError(`${what} of ${h.size} bytes (at most ${cap} are accepted)`);
      this.pending = t;
      return { meta: true, size: h.size };
    }
    return { meta: false, entry: this.entry(h) };
  }

  /** The data of the extended header that header() announced. */
  meta(data: Buffer): void {
    const t = this.pending;
    this.pending = undefined;
    if (t === 'x') this.pax = { ...this.pax, ...decodePax(data) };
    else if (t === 'L') this.longName = data.toString('utf8').replace(/\0.*$/s, '');
    else if (t === 'K') this.longLink = data.toString('utf8').replace(/\0.*$/s, '');
    // 'g' (global pax) carries nothing tarport uses; its size was checked
  }

  private entry(h: RawHeader): DecodedEntry {
    const pax = this.pax;
    const raw = pax.path ?? this.longName ?? h.name;
    const linkname = pax.linkpath ?? this.longLink ?? h.linkname;
    this.pax = NO_PAX;
    this.longName = this.longLink = undefined;
    this.chain = 0;
    if (raw.length > HEADER_LIMITS.longName || linkname.length > HEADER_LIMITS.longName) {
      throw new TarFormatError(`a name or link of more than ${HEADER_LIMITS.longName} bytes`);
    }
    const size = pax.size === undefined ? h.size : paxSize(pax.size);
    const type = entryType(h.typeflag);
    const out = leavesRoot(raw);
    if (out) throw new TarFormatError(`entry ${JSON.stringify(raw)} ${out}: it would be written outside the archive's root`);
    if (type === 'hardlink') {
      const outLink = leavesRoot(linkname);
      if (outLink) throw new TarFormatError(`hard link ${JSON.stringify(raw)} -> ${JSON.stringify(linkname)}: the target ${outLink}`);
    }
    const sparse = h.typeflag === 'S' || (pax !== NO_PAX && Object.keys(pax).some((k) => k.startsWith('GNU.sparse.')));
    return { name: normalizeName(raw), type, size, linkname, sparse };
  }
}

function paxSize(v: string): number {
  const n = /^[0-9]{1,16}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new TarFormatError(`pax size ${JSON.stringify(v.slice(0, 40))} is not a size`);
  return n;
}

/** Encodes a ustar header for a regular file (names up to 100 bytes, sizes below 8 GiB use octal). */
export function encodeFileHeader(name: string, size: number, mode = 0o644, mtime = 0): Buffer {
  const buf = Buffer.alloc(512);
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length > 100) throw new Error(`internal error: tar name too long: ${name}`);
  nameBytes.copy(buf, 0);
  const oct = (v: number, len: number) => v.toString(8).padStart(len - 1, '0') + '\0';
  buf.write(oct(mode, 8), 100, 'latin1');
  buf.write(oct(0, 8), 108, 'latin1');
  buf.write(oct(0, 8), 116, 'latin1');
  if (size < 0o77777777777) {
    buf.write(oct(size, 12), 124, 'latin1');
  } else {
    // GNU base-256 for sizes of 8 GiB and more
    buf[124] = 0x80;
    let v = size;
    for (let i = 135; i > 124; i--) {
      buf[i] = v % 256;
      v = Math.floor(v / 256);
    }
  }
  buf.write(oct(mtime, 12), 136, 'latin1');
  buf.write('        ', 148, 'latin1');
  buf[156] = 48; // '0' regular file
  buf.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += buf[i]!;
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return buf;
}

export function padding(size: number): Buffer {
  const r = size % 512;
  return Buffer.alloc(r === 0 ? 0 : 512 - r);
}
