import { FileTransport } from './file.js';
import type { Location } from './location.js';
import type { Transport } from './types.js';

export interface TransportOptions {
  /** Password for FTP/FTPS/SFTP; never printed. */
  readonly password?: string;
  /** PEM file of a private CA (FTPS). */
  readonly ca?: string;
  /** Private key file (SFTP). */
  readonly identity?: string;
  /** known_hosts file (SFTP). */
  readonly knownHosts?: string;
  /** Connections at once (FTP/FTPS). */
  readonly connections?: number;
  /** HTTP(S) proxies (from HTTPS_PROXY, HTTP_PROXY, NO_PROXY). */
  readonly proxy?: import('./http.js').HttpProxies;
  /**
   * How long a connection may stay silent while an answer or data is due before it counts as
   * stalled: it is dropped and the transfer resumes on a new one, as after a cut (default 30 s).
   */
  readonly idleTimeoutMs?: number;
  /**
   * Ends the transport for good: every connection is dropped at once, so that any wait on a server
   * (a silent one included) ends with an error; the command's signal (SIGTERM, SIGINT).
   */
  readonly signal?: AbortSignal;
  /** S3: an S3-compatible server's URL, the region, path-style addressing (cli/ reads them). */
  readonly s3?: { readonly endpoint?: string; readonly region?: string; readonly pathStyle?: boolean; /** where multipart uploads are recorded between runs (journal.ts) */ readonly journalDir?: string; /** a journal folder that cannot be written: said once, the upload goes on */ readonly onJournalFault?: (message: string) => void };
  /** Told the offset each time a transfer resumes. */
  readonly onResume?: (at: number) => void;
}

/** Opens the transport for a parsed location. */
export async function openTransport(loc: Location, opts: TransportOptions = {}): Promise<Transport> {
  const common = {
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    ...(opts.onResume ? { onResume: opts.onResume } : {}),
    ...(opts.idleTimeoutMs !== undefined ? { timeoutMs: opts.idleTimeoutMs } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  };
  switch (loc.kind) {
    case 'file':
      return new FileTransport(loc.path);
    case 'ftp':
    case 'ftps':
      return new (await import('./ftp.js')).FtpTransport(loc, { ...common, ...(opts.ca ? { ca: opts.ca } : {}), ...(opts.connections ? { maxConnections: opts.connections } : {}) });
    case 'http':
    case 'https':
      return new (await import('./http.js')).HttpTransport(loc, { ...common, ...(opts.ca ? { ca: opts.ca } : {}), ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}), ...(opts.proxy ? { proxy: opts.proxy } : {}) });
    case 's3':
      // the SDK loads only for s3:// locations (its modules cost start-up time)
      return new (await import('./s3.js')).S3Transport(loc, {
        ...(opts.s3?.endpoint ? { endpoint: opts.s3.endpoint } : {}),
        ...(opts.s3?.region ? { region: opts.s3.region } : {}),
        ...(opts.s3?.pathStyle !== undefined ? { pathStyle: opts.s3.pathStyle } : {}),
        ...(opts.s3?.journalDir ? { journal: (await import('./journal.js')).folderJournal(opts.s3.journalDir, opts.s3.onJournalFault ?? ((m) => process.emitWarning(m))) } : {}),
        ...(opts.ca ? { ca: opts.ca } : {}),
        ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
        ...(opts.onResume ? { onResume: opts.onResume } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    case 'sftp':
      return new (await import('./sftp.js')).SftpTransport(loc, { ...common, ...(opts.identity ? { identity: opts.identity } : {}), ...(opts.knownHosts ? { knownHosts: opts.knownHosts } : {}) });
  }
}
