// Types of cutproxy.mjs (plain JavaScript, shared with scripts/bench), for the type-checked tests.
import type { Server, Socket } from 'node:net';

/** A TCP proxy in front of a server that cuts connections at given byte counts and counts bytes. */
export declare class CuttingProxy {
  /** Bytes passed on (data connections in ftp mode, everything in stream mode). */
  bytes: number;
  cuts: number;
  /** The port it listens on (after start). */
  port: number;
  servers: Server[];
  sockets: Set<Socket>;
  /** EPSV commands refused (refuseEpsv), PASV commands passed on. */
  epsvRefused: number;
  pasv: number;
  /** The time (ms since the epoch) of each stall (stallAt, stallAll). */
  stalls: number[];
  /**
   * stallAt: where the carried bytes cross one of these, the connection goes silent instead of
   * being cut (both sockets stay open, nothing is forwarded), as a dead NAT entry leaves it.
   * rate: bytes per second each way, shared by every connection (a link of that speed).
   */
  constructor(target: { host: string; port: number }, cutAt: number[], mode: 'ftp' | 'stream', opts?: { refuseEpsv?: boolean; stallAt?: number[]; rate?: number });
  /** Every connection open now goes silent. */
  stallAll(): void;
  start(): Promise<this>;
  /** The server "goes down": the listener closes and every connection drops. */
  pause(): Promise<void>;
  /** …and comes back on the same port. */
  resume(): Promise<void>;
  close(): Promise<void>;
}
