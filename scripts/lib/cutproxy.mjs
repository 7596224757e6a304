import { createServer, connect } from 'node:net';

/** Calls `fn` with each line (newline included) that arrives on a control connection. */
function eachLine(socket, fn) {
  let buf = '';
  socket.on('data', (d) => {
    buf += d.toString('latin1');
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      fn(buf.slice(0, i + 1));
      buf = buf.slice(i + 1);
    }
  });
}

/** How much of a late pacing timer's lost time a shaped link makes up (ms): what its queue sent meanwhile. */
const SLACK_MS = 50;

/**
 * A TCP proxy for resume tests: it forwards to a server and cuts the connection when the bytes it
 * carried cross each of `cutAt` (counted over the data it forwards). In `ftp` mode it rewrites the
 * server's passive-mode answers (227/229) so that data connections pass through it as well, and
 * counts and cuts only those. Used by the tests and by scripts/bench (plain JavaScript for both).
 */
export class CuttingProxy {
  bytes = 0;
  cuts = 0;
  port = 0;
  /** @type {import('node:net').Server[]} */
  servers = [];
  /** @type {Set<import('node:net').Socket>} */
  sockets = new Set();

  /**
   * @param {{ host: string, port: number }} target
   * @param {number[]} cutAt
   * @param {'ftp' | 'stream'} mode
   * @param {{ refuseEpsv?: boolean, stallAt?: number[] }} [opts] refuseEpsv: answer EPSV with 500
   *   itself, as servers without EPSV do (ftp mode), so that clients must fall back to PASV.
   *   stallAt: where the carried bytes cross one of these, the connection goes silent instead of
   *   being cut (both sockets stay open, nothing more is forwarded either way), as a dead NAT entry
   *   or a hung server leaves it; `stalls` holds the time of each.
   *   rate: bytes per second each way (data connections in ftp mode), shared by every connection,
   *   as one link of that speed would carry them (scripts/bench shapes 1 Gbit/s and 100 Mbit/s)
   */
  constructor(target, cutAt, mode, opts = {}) {
    this.target = target;
    this.cutAt = cutAt;
    this.mode = mode;
    this.refuseEpsv = opts.refuseEpsv ?? false;
    this.stallAt = opts.stallAt ?? [];
    this.rate = opts.rate ?? 0;
    /** when each direction's link is free again (performance.now()), with a rate */
    this.linkFree = { up: 0, down: 0 };
    /** how late a direction's last pacing timer fired (ms, at most SLACK_MS): the next bytes' credit */
    this.late = { up: 0, down: 0 };
    /** @type {number[]} Date.now() of each stall */
    this.stalls = [];
    /** every connection open now is silent (stallAll) */
    this.silenced = new WeakSet();
    /** EPSV commands refused, PASV commands passed on */
    this.epsvRefused = 0;
    this.pasv = 0;
  }

  /**
   * How long (ms) the sender waits after a chunk of n bytes so that the direction carries no more
   * than `rate` bytes per second on average. @param {'up' | 'down'} dir @param {number} n
   */
  pace(dir, n) {
    if (!this.rate) return 0;
    const now = performance.now();
    // A link that had bytes queued kept sending while this process waited for a late timer (a busy
    // machine): that time is made up (`late`, up to SLACK_MS), or the link would slow with the
    // machine's load, which no wire does. A link that was idle gets no credit: it sent nothing.
    this.linkFree[dir] = Math.max(now - this.late[dir], this.linkFree[dir]) + (n * 1000) / this.rate;
    this.late[dir] = 0;
    return this.linkFree[dir] - now;
  }

  /** Waits `ms` holding a direction's bytes back; a timer that fires late leaves that time as credit. */
  holdFor(dir, ms, then) {
    const due = performance.now() + ms;
    setTimeout(() => {
      this.late[dir] = Math.min(SLACK_MS, Math.max(this.late[dir], performance.now() - due));
      then();
    }, ms);
  }

  async start() {
    this.port = await this.listen((client) => {
      const upstream = connect(this.target.port, this.target.host);
      this.track(client, upstream);
      if (this.mode === 'stream') {
        this.pipeCounting(client, upstream, 'up');
        this.pipeCounting(upstream, client, 'down');
      } else {
        eachLine(client, (line) => {
          if (this.silenced.has(client)) return;
          if (/^PASV\b/i.test(line)) this.pasv++;
          if (this.refuseEpsv && /^EPSV\b/i.test(line)) {
            this.epsvRefused++;
            // in line with the server's replies: after every reply to earlier commands
            this.chain = this.chain.then(() => {
              client.write('500 EPSV not understood.\r\n');
              return '';
            });
          } else upstream.write(Buffer.from(line, 'latin1'));
        });
        client.on('end', () => {
          if (!this.silenced.has(client)) upstream.end();
        });
        eachLine(upstream, (line) => {
          if (!this.silenced.has(upstream)) void this.rewrite(line).then((l) => client.write(Buffer.from(l, 'latin1')));
        });
        upstream.on('end', () => {
          if (!this.silenced.has(upstream)) client.end();
        });
      }
    });
    return this;
  }

  /** Passive-mode answers point at a forwarder of ours. Lines keep their order (one awaits the other). */
  chain = Promise.resolve('');
  /** @param {string} line */
  rewrite(line) {
    const next = this.chain.then(async () => {
      const m227 = /^227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)/.exec(line);
      const m229 = /^229 .*\(\|\|\|(\d+)\|\)/.exec(line);
      if (!m227 && !m229) return line;
      const realPort = m227 ? Number(m227[5]) * 256 + Number(m227[6]) : Number(m229[1]);
      const p = await this.listen((client) => {
        const upstream = connect(realPort, this.target.host);
        this.track(client, upstream);
        this.pipeCounting(client, upstream, 'up');
        this.pipeCounting(upstream, client, 'down');
      }, true);
      return m227 ? `227 Entering Passive Mode (127,0,0,1,${Math.floor(p / 256)},${p % 256}).\r\n` : `229 Entering Extended Passive Mode (|||${p}|)\r\n`;
    });
    this.chain = next.catch(() => '');
    return next;
  }

  /**
   * @param {import('node:net').Socket} from @param {import('node:net').Socket} to
   * @param {'up' | 'down'} dir client → server or back (for the rate)
   */
  pipeCounting(from, to, dir) {
    // reading resumes when the receiver drained and the link's pace allows: both may hold it
    let held = 0;
    const hold = () => {
      if (held++ === 0) from.pause();
    };
    const release = () => {
      if (--held === 0 && !this.silenced.has(from)) from.resume();
    };
    from.on('data', (d) => {
      if (this.silenced.has(from)) return; // stalled: what arrives is swallowed, nothing answers
      const before = this.bytes;
      this.bytes += d.length;
      const stall = this.stallAt.find((c) => before < c && this.bytes >= c);
      if (stall !== undefined) {
        to.write(d.subarray(0, stall - before));
        this.stalls.push(Date.now());
        this.silence(from, to);
        return;
      }
      const cut = this.cutAt.find((c) => before < c && this.bytes >= c);
      if (cut !== undefined) {
        this.cuts++;
        // forward up to the cut, then break both sides as a dropped link would
        to.write(d.subarray(0, cut - before));
        from.destroy();
        to.destroy();
        return;
      }
      if (!to.write(d)) {
        hold();
        to.once('drain', release);
      }
      const wait = this.pace(dir, d.length);
      if (wait >= 1) {
        hold();
        this.holdFor(dir, wait, release);
      }
    });
    from.on('end', () => {
      if (!this.silenced.has(from)) to.end();
    });
  }

  /** Both sockets stay open and nothing more crosses, either way. @param {import('node:net').Socket[]} s */
  silence(...s) {
    for (const x of s) {
      this.silenced.add(x);
      // read nothing more: the sender's buffers fill and its writes wait, as on a real silent link
      x.pause();
    }
  }

  /** Every connection open now goes silent (control and data); new ones work. */
  stallAll() {
    this.stalls.push(Date.now());
    this.silence(...this.sockets);
  }

  /** @param {import('node:net').Socket[]} s */
  track(...s) {
    for (const x of s) {
      this.sockets.add(x);
      x.on('error', () => x.destroy());
      x.on('close', () => {
        this.sockets.delete(x);
        for (const y of s) y.destroy();
      });
    }
  }

  /** @param {(s: import('node:net').Socket) => void} onConn @returns {Promise<number>} */
  listen(onConn, once = false) {
    return new Promise((resolve) => {
      const srv = createServer((s) => {
        onConn(s);
        if (once) srv.close();
      });
      this.servers.push(srv);
      srv.listen(0, '127.0.0.1', () => resolve(srv.address().port));
    });
  }

  /** The server "goes down": the listener closes and every connection drops. */
  async pause() {
    const main = this.servers[0];
    const closed = new Promise((r) => main.close(() => r(undefined)));
    for (const s of this.sockets) s.destroy(); // close() waits for open connections: drop them first
    await closed;
  }

  /** …and comes back on the same port. */
  async resume() {
    const main = this.servers[0];
    await new Promise((r) => main.listen(this.port, '127.0.0.1', () => r()));
  }

  async close() {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(() => r(undefined)))));
  }
}
