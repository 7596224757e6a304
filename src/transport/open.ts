import { TarportError } from '../errors.js';
import { FileTransport } from './file.js';
import { formatLocation, type Location } from './location.js';
import type { Transport } from './types.js';

export interface TransportOptions {
  /** Password for FTP/FTPS/SFTP; never printed. */
  readonly password?: string;
  readonly ca?: string;
  readonly identity?: string;
  readonly knownHosts?: string;
}

/** Opens the transport for a parsed location. */
export async function openTransport(loc: Location, _opts: TransportOptions = {}): Promise<Transport> {
  switch (loc.kind) {
    case 'file':
      return new FileTransport(loc.path);
    case 'ftp':
    case 'ftps':
    case 'sftp':
      throw new TarportError('USAGE', `${formatLocation(loc)}: ${loc.kind}:// repositories are not supported by this build yet; use a local directory`);
  }
}
