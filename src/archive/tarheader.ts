// A minimal tar header decoder (ustar, GNU long names, pax), used to index archives on disk by seeking
// from header to header without reading the data in between.

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';

export interface RawHeader {
  name: string;
  size: number;
  typeflag: string;
  linkname: string;
}

export class TarFormatError extends Error {}

function cstr(buf: Buffer, start: number, len: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end < 0 || end > start + len ? start + len : end);
}

function numeric(buf: Buffer, start: number, len: number): number {
  if ((buf[start]! & 0x80) !== 0) {
    // GNU base-256: big-endian, first byte's high bit is the marker
    let v = buf[start]! & 0x7f;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + buf[i]!;
    return v;
  }
  const s = buf.toString('latin1', start, start + len).replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`invalid octal number ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

export function isZeroBlock(buf: Buffer): boolean {
  for (let i = 0; i < 512; i++) if (buf[i] !== 0) return false;
  return true;
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
    if (sp < 0) break;
    const len = parseInt(data.toString('latin1', pos, sp), 10);
    if (!Number.isFinite(len) || len <= 0 || pos + len > data.length) throw new TarFormatError('invalid pax record');
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
      return 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '5':
      return 'dir';
    default:
      return 'other';
  }
}

/** Normalizes an entry name: no leading './' or '/', no trailing '/'. */
export function normalizeName(name: string): string {
  let n = name.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
  n = n.replace(/\/+$/, '');
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
