import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join, posix } from 'node:path';

// A small scripted FTP server of the tests' own: it serves a folder read-only, as a dumb FTP drop box
// does, and lies as it is told (listings without end, files without end, SIZE replies that are
// wrong). Passive mode only (EPSV and PASV, on loopback). Enough of FTP for basic-ftp and tarport.

export interface Lies {
  /** LIST of these folders ('/' is the root) sends lines without end. */
  readonly endlessList?: readonly string[];
  /** RETR of these files sends bytes without end. */
  readonly endlessRetr?: readonly string[];
  /** RETR of these files sends one chunk, then nothing, and keeps the connection open (a silent link). */
  readonly stalledRetr?: readonly string[];
  /** SIZE of a file answers this instead of its size. */
  readonly size?: (path: string, real: number) => number;
  /** SIZE is answered with this reply instead (a server without SIZE: `502 ...`). */
  readonly sizeReply?: string;
}

export interface LyingFtp {
  readonly port: number;
  /** Data bytes sent so far (all connections): what a client read before it stopped. */
  readonly sent: () => number;
  /** Control connections accepted so far. */
  readonly logins: () => number;
  /** Ends every connection and goes on listening, as a server that drops idle sessions (vsftpd's idle_session_timeout). */
  dropConnections(): Promise<void>;
  close(): Promise<void>;
}

const line = (s: Socket, text: string) => !s.destroyed && s.write(`${text}\r\n`);

export async function startLyingFtp(root: string, lies: Lies = {}): Promise<LyingFtp> {
  let sent = 0;
  let logins = 0;
  let closing!: () => void;
  const closed = new Promise<void>((r) => (closing = r));
  const sockets = new Set<Socket>();
  const servers = new Set<Server>();
  const control = createServer((s) => {
    logins++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let cwd = '/';
    let rest = 0;
    let data: Promise<Socket> | undefined;
    const resolve = (p: string) => posix.normalize(posix.isAbsolute(p) ? p : posix.join(cwd, p || '.'));
    const local = (p: string) => join(root, resolve(p));
    /** Opens a listener for one data connection; its port. */
    const passive = async (): Promise<number> => {
      const srv = createServer();
      servers.add(srv);
      data = new Promise<Socket>((res) =>
        srv.once('connection', (d) => {
          sockets.add(d);
          d.on('close', () => sockets.delete(d));
          d.on('error', () => undefined);
          srv.close();
          servers.delete(srv);
          res(d);
        }),
      );
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
      return (srv.address() as { port: number }).port;
    };
    /** Sends through the data connection: a generator's chunks, without end when told. */
    const transfer = async (chunks: () => AsyncIterable<Buffer> | Iterable<Buffer>) => {
      if (!data) return line(s, '425 use EPSV or PASV first');
      const d = await data;
      data = undefined;
      line(s, '150 here it comes');
      for await (const c of chunks()) {
        if (d.destroyed) return;
        sent += c.length;
        if (!d.write(c)) {
          await new Promise<void>((r) => {
            const go = () => {
              d.off('drain', go);
              d.off('close', go);
              r();
            };
            d.on('drain', go);
            d.on('close', go);
          });
        }
      }
      d.end(() => line(s, '226 done'));
    };
    const listing = async function* (dir: string): AsyncIterable<Buffer> {
      if ((lies.endlessList ?? []).includes(resolve(dir))) {
        for (let i = 0; ; i++) yield Buffer.from(`-rw-r--r-- 1 ftp ftp 12 Jan 01 00:00 endless-${i}.json\r\n`.repeat(200));
      }
      for (const name of await readdir(local(dir)).catch(() => [] as string[])) {
        const st = await stat(join(local(dir), name));
        yield Buffer.from(`${st.isDirectory() ? 'd' : '-'}rw-r--r-- 1 ftp ftp ${st.size} Jan 01 00:00 ${name}\r\n`);
      }
    };
    const stalled = async function* (): AsyncIterable<Buffer> {
      yield Buffer.alloc(1 << 16, 0x20);
      await closed;
    };
    const endless = function* (): Iterable<Buffer> {
      const b = Buffer.alloc(1 << 16, 0x20);
      for (;;) yield b;
    };
    const handle = async (cmd: string, arg: string) => {
      switch (cmd) {
        case 'USER':
          return line(s, '331 password please');
        case 'PASS':
          return line(s, '230 logged in');
        case 'SYST':
          return line(s, '215 UNIX Type: L8');
        case 'FEAT':
          return s.write('211-Features:\r\n SIZE\r\n MDTM\r\n EPSV\r\n REST STREAM\r\n UTF8\r\n211 End\r\n');
        case 'OPTS':
        case 'TYPE':
        case 'STRU':
        case 'MODE':
        case 'NOOP':
          return line(s, '200 ok');
        case 'PWD':
          return line(s, `257 "${cwd}"`);
        case 'CWD': {
          const st = await stat(local(arg)).catch(() => undefined);
          if (!st?.isDirectory()) return line(s, '550 no such folder');
          cwd = resolve(arg);
          return line(s, '250 ok');
        }
        case 'SIZE': {
          if (lies.sizeReply) return line(s, lies.sizeReply);
          const st = await stat(local(arg)).catch(() => undefined);
          if (!st?.isFile()) return line(s, '550 no such file');
          return line(s, `213 ${lies.size ? lies.size(resolve(arg), st.size) : st.size}`);
        }
        case 'MDTM': {
          const st = await stat(local(arg)).catch(() => undefined);
          if (!st) return line(s, '550 no such file');
          return line(s, `213 ${st.mtime.toISOString().replace(/[-:T]/g, '').slice(0, 14)}`);
        }
        case 'EPSV':
          return line(s, `229 Entering Extended Passive Mode (|||${await passive()}|)`);
        case 'PASV': {
          const p = await passive();
          return line(s, `227 Entering Passive Mode (127,0,0,1,${p >> 8},${p & 255})`);
        }
        case 'REST':
          rest = Number(arg) || 0;
          return line(s, '350 restarting');
        case 'LIST':
        case 'NLST':
          return transfer(() => listing(arg.replace(/^-\w+\s*/, '')));
        case 'RETR': {
          const from = rest;
          rest = 0;
          if ((lies.endlessRetr ?? []).includes(resolve(arg))) return transfer(endless);
          if ((lies.stalledRetr ?? []).includes(resolve(arg))) return transfer(stalled);
          const st = await stat(local(arg)).catch(() => undefined);
          if (!st?.isFile()) return line(s, '550 no such file');
          return transfer(() => createReadStream(local(arg), { start: from }) as AsyncIterable<Buffer>);
        }
        case 'QUIT':
          line(s, '221 bye');
          return s.end();
        default:
          return line(s, '550 this drop box is read-only');
      }
    };
    let buf = '';
    let queue = Promise.resolve();
    s.on('data', (d) => {
      buf += d.toString('utf8');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const sp = text.indexOf(' ');
        const cmd = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
        const arg = sp < 0 ? '' : text.slice(sp + 1);
        queue = queue.then(() => handle(cmd, arg)).then(
          () => undefined,
          () => void line(s, '451 failed'),
        );
      }
    });
    line(s, '220 a lying drop box');
  });
  await new Promise<void>((r) => control.listen(0, '127.0.0.1', () => r()));
  const port = (control.address() as { port: number }).port;
  return {
    port,
    sent: () => sent,
    logins: () => logins,
    dropConnections: async () => {
      const ending = [...sockets].map((so) => new Promise<void>((r) => (so.destroyed ? r() : so.once('close', () => r()))));
      for (const so of sockets) so.end('421 Timeout.\r\n');
      await Promise.all(ending);
    },
    close: async () => {
      closing();
      for (const so of sockets) so.destroy();
      for (const srv of servers) srv.close();
      await new Promise<void>((r) => control.close(() => r()));
    },
  };
}
