import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An HTTP server that answers every request with 200 and a 1 MiB body it sends one byte at a time,
 * every 100 ms: a link that never goes idle and never ends, which only a close can cut.
 */
export interface Trickle {
  readonly port: number;
  /** Body bytes sent so far. */
  sent(): number;
  /** Requests received so far. */
  requests(): number;
  close(): Promise<void>;
}

export async function startTrickle(): Promise<Trickle> {
  let sent = 0;
  let requests = 0;
  const open = new Set<ServerResponse>();
  const server: Server = createServer((_req, res) => {
    requests++;
    open.add(res);
    res.writeHead(200, { 'content-length': String(1 << 20), 'content-type': 'application/octet-stream' });
    const t = setInterval(() => {
      if (res.destroyed) return clearInterval(t);
      res.write('x');
      sent++;
    }, 100);
    res.on('close', () => (clearInterval(t), open.delete(res)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    sent: () => sent,
    requests: () => requests,
    close: async () => {
      for (const r of open) r.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
