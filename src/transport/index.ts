export type { ObjectInfo, ReadOptions, Transport, WriteOptions } from './types.js';
export { FileTransport } from './file.js';
export { parseLocation, formatLocation, maskLocationString, type Location } from './location.js';
export { openTransport, type TransportOptions } from './open.js';
export { CountingTransport, type TransportCounters } from './counting.js';
export { MemoryTransport } from './memory.js';
export type { FtpOptions } from './ftp.js';
export type { SftpOptions } from './sftp.js';
export { checkHostKey, fingerprint } from './knownhosts.js';
