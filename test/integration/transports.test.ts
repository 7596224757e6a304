import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect, createServer, type AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { FtpTransport } from '../../src/transport/ftp.js';
import { openTransport, parseLocation, type Transport, type TransportOptions } from '../../src/transport/index.js';
import { docker, fixture, realEnv, tarport, tempDir } from '../helpers.js';
import { CuttingProxy } from '../proxy.js';
import { transportContract } from '../transport-contract.js';

// Every transport against real servers started by scripts/test: vsftpd (FTP and FTPS with a CA of
// its own), pure-ftpd (a second FTP implementation) and OpenSSH (SFTP, key auth, own host key).

function servers() {
  const need = ['TP_FTP_URL', 'TP_FTPS_URL', 'TP_FTP2_URL', 'TP_SFTP_URL', 'TP_FTP_PASSWORD', 'TP_FTPS_CA', 'TP_SFTP_IDENTITY', 'TP_SFTP_KNOWN_HOSTS', 'TP_SERVER_HOME'] as const;
  const missing = need.filter((k) => !process.env[k]);
  if (missing.length > 0) throw new Error(`run the suite through scripts/test: it starts the FTP, FTPS and SFTP servers (${missing.join(', ')} not set)`);
  const e = Object.fromEntries(need.map((k) => [k, process.env[k]!])) as Record<(typeof need)[number], string>;
  return e;
}

const S = servers();
const creds: TransportOptions = { password: S.TP_FTP_PASSWORD, ca: S.TP_FTPS_CA, identity: S.TP_SFTP_IDENTITY, knownHosts: S.TP_SFTP_KNOWN_HOSTS };
const opened: Transport[] = [];

/** A transport on a fresh folder of the server. */
async function open(url: string, extra: TransportOptions = {}, sub = `t-${randomBytes(4).toString('hex')}`): Promise<Transport> {
  const t = await openTransport(parseLocation(`${url}/${sub}`), { ...creds, ...extra });
  opened.push(t);
  return t;
}

afterAll(async () => {
  for (const t of opened) await t.close().catch(() => undefined);
});

transportContract('ftp (vsftpd)', () => open(S.TP_FTP_URL));
transportContract('ftps (vsftpd, explicit TLS)', () => open(S.TP_FTPS_URL));
transportContract('ftp (pure-ftpd)', () => open(S.TP_FTP2_URL));
transportContract('sftp (OpenSSH)', () => open(S.TP_SFTP_URL));

async function readAll(t: Transport, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await t.read(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function withPort(url: string, port: number): string {
  return url.replace(/@127\.0\.0\.1:\d+/, `@127.0.0.1:${port}`);
}

const portOf = (url: string) => Number(/@127\.0\.0\.1:(\d+)/.exec(url)![1]);

/** A known_hosts file that also names the server's key under the proxies' ports. */
async function viaProxies(ports: number[]): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const line = (await readFile(S.TP_SFTP_KNOWN_HOSTS, 'utf8')).trim();
  const key = line.split(/\s+/).slice(1).join(' ');
  const f = join(await tempDir(), 'known_hosts');
  await writeFile(f, [line, ...ports.map((p) => `[127.0.0.1]:${p} ${key}`)].join('\n') + '\n');
  return f;
}

describe('resume: a transfer cut twice completes and re-sends little', () => {
  // large enough that the requests in flight when a link drops (2 MiB for SFTP) stay a small part
  const SIZE = 48 << 20;
  const data = randomBytes(SIZE);
  // each row: a protocol, how its connection is cut, and which calls move the bytes: streams (read,
  // and write from a stream), or what push and pull use (write from a file, readTo into a sink)
  const file = tempDir().then(async (d) => {
    await writeFile(join(d, 'blob'), data);
    return join(d, 'blob');
  });
  it.each([
    ['ftp (vsftpd), streams', S.TP_FTP_URL, 'ftp' as const, 'streams' as const],
    ['ftp (vsftpd), file and sink', S.TP_FTP_URL, 'ftp' as const, 'sink' as const],
    ['sftp (OpenSSH), streams', S.TP_SFTP_URL, 'stream' as const, 'streams' as const],
  ])('%s: upload and download', async (_name, url, mode, calls) => {
    const sub = `resume-${randomBytes(4).toString('hex')}`;
    const put = async (t: Transport, key: string) => (calls === 'streams' ? t.write(key, () => Readable.from([data])) : t.write(key, { file: await file }));
    const get = async (t: Transport, key: string): Promise<Buffer> => {
      if (calls === 'streams') return readAll(t, key);
      const out = Buffer.alloc(SIZE);
      let at = 0;
      // an asynchronous sink, as the cache's: it holds the lent buffer until the copy is done
      await t.readTo(key, async (chunk) => {
        await new Promise((r) => setImmediate(r));
        at += chunk.copy(out, at);
      });
      return out.subarray(0, at);
    };
    // upload through a proxy that cuts twice
    const up = await new CuttingProxy({ host: '127.0.0.1', port: portOf(url) }, [SIZE * 0.3, SIZE * 0.65], mode).start();
    const down = await new CuttingProxy({ host: '127.0.0.1', port: portOf(url) }, [SIZE * 0.25, SIZE * 0.7], mode).start();
    const uncut = await new CuttingProxy({ host: '127.0.0.1', port: portOf(url) }, [], mode).start();
    const knownHosts = await viaProxies([up.port, down.port, uncut.port]);
    const resumes: number[] = [];
    const tu = await open(withPort(url, up.port), { onResume: (at) => resumes.push(at), knownHosts }, sub);
    await put(tu, 'blob');
    await tu.close();
    await up.close();
    expect(up.cuts).toBe(2);
    expect(resumes.length).toBeGreaterThanOrEqual(2);
    expect(resumes.every((r) => r > 0)).toBe(true); // resumed, not restarted
    const direct = await open(url, {}, sub);
    expect((await readAll(direct, 'blob')).equals(data)).toBe(true);
    // download through a proxy that cuts twice
    const downResumes: number[] = [];
    const td = await open(withPort(url, down.port), { knownHosts, onResume: (at) => downResumes.push(at) }, sub);
    const got = await get(td, 'blob');
    await td.close();
    await down.close();
    expect(down.cuts).toBe(2);
    expect(downResumes.filter((r) => r > 0).length).toBeGreaterThanOrEqual(2);
    expect(got.equals(data)).toBe(true);
    // bytes carried for both transfers, against what an uncut pair would carry
    const tn = await open(withPort(url, uncut.port), { knownHosts }, sub);
    await put(tn, 'blob2');
    await get(tn, 'blob2');
    await tn.close();
    await uncut.close();
    expect(up.bytes + down.bytes).toBeLessThanOrEqual(uncut.bytes * 1.1);
  });
});

describe('timeouts', () => {
  it('a reader slower than the timeout is not a stalled server: FTP and FTPS reads and readTo complete', async () => {
    // the timeout also bounds the connect and the TLS handshake: 5 s, which a busy machine with files
    // running side by side needs (400 ms failed the connect; 2 s left one slow handshake to a
    // retry); each pause is more than twice as long
    const TIMEOUT = 5000;
    const PAUSE = 11000;
    const data = randomBytes(6 * 1024 * 1024);
    for (const url of [S.TP_FTP_URL, S.TP_FTPS_URL]) {
      const sub = `slow-${randomBytes(4).toString('hex')}`;
      await (await open(url, {}, sub)).write('x', () => Readable.from([data]));
      const resumes: number[] = [];
      const t = new FtpTransport(parseLocation(`${url}/${sub}`) as never, { password: S.TP_FTP_PASSWORD, ca: S.TP_FTPS_CA, timeoutMs: TIMEOUT, onResume: (at) => resumes.push(at) });
      opened.push(t);
      // the stream: nobody reads for longer than the timeout, twice
      const s = await t.read('x');
      const chunks: Buffer[] = [];
      let pauses = 0;
      for await (const c of s) {
        chunks.push(c as Buffer);
        if (chunks.length === 3 || chunks.length === 40) {
          pauses++;
          await new Promise((r) => setTimeout(r, PAUSE));
        }
      }
      expect(pauses).toBe(2);
      expect(Buffer.concat(chunks).equals(data)).toBe(true);
      // the sink: holds a chunk longer than the timeout
      const got: Buffer[] = [];
      await t.readTo('x', async (c) => {
        got.push(Buffer.from(c));
        if (got.length === 2) await new Promise((r) => setTimeout(r, PAUSE));
      });
      expect(Buffer.concat(got).equals(data)).toBe(true);
      expect(resumes).toEqual([]); // no connection was dropped for taking its time
    }
  });
});

describe('idle timeout: a silent link is found and the transfer resumes on a new connection', () => {
  const IDLE = 4000;
  const SIZE = 16 << 20;
  const data = randomBytes(SIZE);
  /** Time from each stall to the resume that followed it. */
  const delays = (stalls: number[], resumes: number[]) => stalls.map((t) => Math.min(...resumes.filter((r) => r >= t)) - t);

  // vsftpd locks a file while an upload to it runs (lock_upload_files), and a session whose data
  // connection went silent holds that lock until the server's own timeout (5 min): a resumed upload
  // to vsftpd waits for it. pure-ftpd does not lock, so the FTP row runs there.
  // The bound is 2x the timeout: the stall is found after one timeout, and a new connection (TCP,
  // TLS or SSH handshake, login: 0.5-3 s on a loaded 2-core machine) must fit in the second. The
  // timeouts are long enough for that; the default (30 s) leaves far more room.
  it.each([
    ['ftp (pure-ftpd): the data connection stalls', S.TP_FTP2_URL, 'ftp' as const, IDLE],
    // an SSH handshake and login take up to 3 s here under load: a longer timeout keeps the 2x bound meaningful
    ['sftp (OpenSSH): the SSH connection stalls', S.TP_SFTP_URL, 'stream' as const, 6000],
  ])('%s, in an upload and in a download', async (_name, url, mode, idle) => {
    const sub = `stall-${randomBytes(4).toString('hex')}`;
    const up = await new CuttingProxy({ host: '127.0.0.1', port: portOf(url) }, [], mode, { stallAt: [SIZE * 0.4] }).start();
    const down = await new CuttingProxy({ host: '127.0.0.1', port: portOf(url) }, [], mode, { stallAt: [SIZE * 0.5] }).start();
    const knownHosts = await viaProxies([up.port, down.port]);
    const upResumes: number[] = [];
    const tu = await open(withPort(url, up.port), { knownHosts, idleTimeoutMs: idle, onResume: () => upResumes.push(Date.now()) }, sub);
    await tu.write('blob', () => Readable.from([data]));
    await tu.close();
    await up.close();
    expect(up.stalls.length).toBe(1);
    const direct = await open(url, {}, sub);
    expect((await readAll(direct, 'blob')).equals(data)).toBe(true);
    const downResumes: number[] = [];
    const td = await open(withPort(url, down.port), { knownHosts, idleTimeoutMs: idle, onResume: () => downResumes.push(Date.now()) }, sub);
    expect((await readAll(td, 'blob')).equals(data)).toBe(true);
    await td.close();
    await down.close();
    expect(down.stalls.length).toBe(1);
    const [upDelay, downDelay] = [...delays(up.stalls, upResumes), ...delays(down.stalls, downResumes)];
    console.log(`${_name}: stall to resume: upload ${upDelay} ms, download ${downDelay} ms (idle timeout ${idle} ms)`);
    expect(downDelay).toBeLessThan(2 * idle);
    // the kernel goes on taking a trickle of an upload for seconds after the far end went silent;
    // the timeout runs from the last piece it took, and Node's own socket timeout (which lets its
    // first expiry pass after such progress) no longer decides
    expect(upDelay).toBeLessThan(2 * idle);
  }, 120_000);

  it('ftps (vsftpd): the control connection stalls while the final reply is due, in an upload and in a download', { timeout: 60_000 }, async () => {
    const url = S.TP_FTPS_URL;
    const sub = `stall-${randomBytes(4).toString('hex')}`;
    // over TLS the proxy cannot steer data connections: they go straight to the server, and the
    // control connection, which passes the proxy, goes silent
    const proxy = await new CuttingProxy({ host: '127.0.0.1', port: portOf(url) }, [], 'stream').start();
    const resumes: number[] = [];
    const resumedAt: number[] = [];
    const t = await open(withPort(url, proxy.port), { idleTimeoutMs: IDLE, onResume: (at) => (resumedAt.push(at), resumes.push(Date.now())), connections: 1 }, sub);
    // the source is replayed on the resume: only the first attempt meets the stall
    async function* silencedAtEnd() {
      yield data;
      if (proxy.stalls.length === 0) proxy.stallAll();
    }
    await t.write('blob', () => Readable.from(silencedAtEnd()));
    expect(proxy.stalls.length).toBe(1);
    // the server held every byte: one look at its size, and no upload of nothing (which vsftpd
    // answered with 426 while the first session's file was still its own)
    expect(resumedAt).toEqual([SIZE]);
    const direct = await open(url, {}, sub);
    expect((await readAll(direct, 'blob')).equals(data)).toBe(true);
    const parts: Buffer[] = [];
    let got = 0;
    await t.readTo('blob', (c) => {
      parts.push(Buffer.from(c));
      got += c.length;
      if (got === SIZE && proxy.stalls.length === 1) proxy.stallAll(); // the data is all there; the 226 will never come through
    });
    expect(Buffer.concat(parts).subarray(0, SIZE).equals(data)).toBe(true);
    expect(proxy.stalls.length).toBe(2);
    await t.close();
    await proxy.close();
    const measured = delays(proxy.stalls, resumes);
    console.log(`ftps control stall to resume ${measured.join(' ms, ')} ms (idle timeout ${IDLE} ms)`);
    for (const d of measured) expect(d).toBeLessThan(2 * IDLE);
  });
});

/** The processes that hold the TCP connection of 127.0.0.1:local to 127.0.0.1:remote, from /proc. */
async function socketHolders(local: number, remote: number): Promise<number[]> {
  const { readdir, readlink } = await import('node:fs/promises');
  const hex = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');
  const row = (await readFile('/proc/net/tcp', 'utf8')).split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[1]?.endsWith(`:${hex(local)}`) && f[2]?.endsWith(`:${hex(remote)}`));
  if (!row) throw new Error(`no TCP connection 127.0.0.1:${local} -> :${remote} in /proc/net/tcp`);
  const holders: number[] = [];
  for (const pid of (await readdir('/proc')).filter((d) => /^\d+$/.test(d))) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === `socket:[${row[9]}]`) holders.push(Number(pid));
  }
  return holders;
}

/** OpenSSH's internal-sftp process of the session whose sshd holds that connection. */
async function internalSftpOf(holders: number[]): Promise<number> {
  const { readdir } = await import('node:fs/promises');
  for (const pid of (await readdir('/proc')).filter((d) => /^\d+$/.test(d))) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (holders.includes(ppid) && cmd.includes('@internal-sftp')) return Number(pid);
  }
  throw new Error(`no internal-sftp process under ${holders.join(', ')}`);
}

describe('a hung SFTP subsystem behind a live SSH connection', () => {
  it('sftp (OpenSSH): a download whose internal-sftp process was stopped resumes on a new session, though sshd answers every keepalive', async () => {
    const sub = `hung-${randomBytes(4).toString('hex')}`;
    const data = randomBytes(16 << 20);
    const direct = await open(S.TP_SFTP_URL, {}, sub);
    await direct.write('blob', () => Readable.from([data]));
    const proxy = await new CuttingProxy({ host: '127.0.0.1', port: portOf(S.TP_SFTP_URL) }, [], 'stream').start();
    const knownHosts = await viaProxies([proxy.port]);
    const idle = 4_000;
    const resumes: number[] = [];
    const t = await open(withPort(S.TP_SFTP_URL, proxy.port), { knownHosts, idleTimeoutMs: idle, onResume: () => resumes.push(Date.now()) }, sub);
    const stream = await t.read('blob');
    const it = stream[Symbol.asyncIterator]();
    const chunks: Buffer[] = [(await it.next()).value as Buffer]; // the reader fills its buffer, then waits for us
    const upstream = [...(proxy as unknown as { sockets: Set<import('node:net').Socket> }).sockets].find((x) => x.remotePort === portOf(S.TP_SFTP_URL))!;
    const stopped = await internalSftpOf(await socketHolders(portOf(S.TP_SFTP_URL), upstream.localPort!));
    process.kill(stopped, 'SIGSTOP');
    const stoppedAt = Date.now();
    try {
      for (let r = await it.next(); !r.done; r = await it.next()) chunks.push(r.value as Buffer);
      expect(Buffer.concat(chunks).equals(data)).toBe(true);
      expect(resumes.length).toBe(1);
      const delay = resumes[0]! - stoppedAt;
      console.log(`sftp: stopped internal-sftp to resume: ${delay} ms (idle timeout ${idle} ms)`);
      expect(delay).toBeGreaterThanOrEqual(idle - 200);
      expect(delay).toBeLessThan(2 * idle);
    } finally {
      process.kill(stopped, 'SIGKILL');
      await t.close();
      await proxy.close();
    }
  }, 60_000);
});

describe('passive mode', () => {
  it('a server without EPSV: every transfer falls back to PASV, and EPSV is asked once per server', async () => {
    const proxy = await new CuttingProxy({ host: '127.0.0.1', port: portOf(S.TP_FTP_URL) }, [], 'ftp', { refuseEpsv: true }).start();
    const t = await open(withPort(S.TP_FTP_URL, proxy.port), { connections: 1 });
    const data = randomBytes(3 * 1024 * 1024);
    const dir = await tempDir();
    await writeFile(join(dir, 'f'), data);
    await t.write('p/file', { file: join(dir, 'f') });
    await t.write('p/stream', () => Readable.from([data]));
    expect((await readAll(t, 'p/file')).equals(data)).toBe(true);
    const parts: Buffer[] = [];
    await t.readTo('p/stream', (c) => void parts.push(Buffer.from(c)));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    expect((await t.stat('p/file'))?.size).toBe(data.length);
    await t.close();
    await proxy.close();
    expect(proxy.epsvRefused).toBe(1);
    expect(proxy.pasv).toBeGreaterThanOrEqual(4);
    expect(proxy.bytes).toBeGreaterThanOrEqual(4 * data.length); // the data went through the proxy's forwarders
  });
});

describe('SFTP folders', () => {
  it('folders removed behind a live transport are made again: a write and a rename into them succeed', async () => {
    const sub = `t-${randomBytes(4).toString('hex')}`;
    const t = await open(S.TP_SFTP_URL, {}, sub);
    const data = randomBytes(100_000);
    await t.write('a/b/one', () => Readable.from([data]));
    await t.write('c/d/two', () => Readable.from([data]));
    // the transport made (and remembers) a/b and c/d; both go, as an operator's rm -r would do
    await rm(join(S.TP_SERVER_HOME, sub, 'a'), { recursive: true });
    await t.write('a/b/three', () => Readable.from([data]));
    expect((await readAll(t, 'a/b/three')).equals(data)).toBe(true);
    await rm(join(S.TP_SERVER_HOME, sub, 'c'), { recursive: true });
    await t.rename('a/b/three', 'c/d/four');
    expect((await readAll(t, 'c/d/four')).equals(data)).toBe(true);
    expect(await t.stat('a/b/three')).toBeUndefined();
  });
});

describe('SFTP: an early connect', () => {
  it('opens the one session every request of the transport then uses; a refused host key still fails the first request', async () => {
    // a forwarder in front of the sshd that counts the connections made through it
    let connections = 0;
    const fwd = createServer((c) => {
      connections++;
      const s = netConnect(portOf(S.TP_SFTP_URL), '127.0.0.1');
      c.pipe(s).pipe(c);
      c.on('error', () => s.destroy());
      s.on('error', () => c.destroy());
    });
    fwd.listen(0, '127.0.0.1');
    await once(fwd, 'listening');
    const port = (fwd.address() as AddressInfo).port;
    try {
      const t = await open(withPort(S.TP_SFTP_URL, port), { knownHosts: await viaProxies([port]) });
      t.connectEarly!();
      while (connections === 0) await new Promise((r) => setTimeout(r, 5)); // dialled before any request
      const data = randomBytes(100_000);
      await t.write('a/one', () => Readable.from([data]));
      expect((await readAll(t, 'a/one')).equals(data)).toBe(true);
      expect((await t.stat('a/one'))?.size).toBe(data.length);
      expect(connections).toBe(1);
      const dir = await tempDir();
      await writeFile(join(dir, 'empty_known_hosts'), '');
      const u = await open(S.TP_SFTP_URL, { knownHosts: join(dir, 'empty_known_hosts') });
      u.connectEarly!();
      const e = await u.stat('x').then(() => undefined, (err: Error & { code?: string }) => err);
      expect(e?.code).toBe('UNTRUSTED');
    } finally {
      fwd.close();
    }
  });
});

describe('credentials and identity', () => {
  const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: Error & { code?: string; retryable?: boolean }) => e);

  it('SFTP refuses an unknown host key, naming its fingerprint (exit 3 from the CLI)', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'empty_known_hosts'), '');
    const t = await open(S.TP_SFTP_URL, { knownHosts: join(dir, 'empty_known_hosts') });
    const e = await errorOf(t.stat('x'));
    expect(e?.code).toBe('UNTRUSTED');
    expect(e?.message).toMatch(/unknown host key SHA256:[A-Za-z0-9+/]{43}/);
    expect(e?.message).toMatch(/ssh-keyscan/);
    const cli = await tarport(['ls', S.TP_SFTP_URL, '--identity', S.TP_SFTP_IDENTITY, '--known-hosts', join(dir, 'empty_known_hosts')]);
    expect(cli.code).toBe(3);
  });

  it('SFTP refuses a host key that changed', async () => {
    const dir = await tempDir();
    const port = portOf(S.TP_SFTP_URL);
    // a known_hosts line for this host with some other key
    await writeFile(join(dir, 'kh'), `[127.0.0.1]:${port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n`);
    const e = await errorOf((await open(S.TP_SFTP_URL, { knownHosts: join(dir, 'kh') })).stat('x'));
    expect(e?.code).toBe('UNTRUSTED');
    expect(e?.message).toMatch(/host key .* changed/);
  });

  it('FTPS refuses a certificate it cannot verify: no silent insecure mode', async () => {
    const e = await errorOf((await open(S.TP_FTPS_URL, { ca: '' })).stat('x'));
    expect(e?.code).toBe('UNTRUSTED');
    expect(e?.message).toMatch(/--ca/);
  });

  it('an FTPS server that breaks off TLS with plain text (vsftpd\'s "500 OOPS") is named as such, not as a bare OpenSSL error', async () => {
    // a fake server: the real certificate, then plain text inside the TLS connection
    const dir = dirname(S.TP_FTPS_CA);
    const [key, cert] = await Promise.all([readFile(join(dir, 'ftps.key')), readFile(join(dir, 'ftps.crt'))]);
    const server = createServer((sock) => {
      sock.write('220 fake\r\n');
      sock.once('data', () => {
        sock.write('234 AUTH TLS ok\r\n');
        const tls = new TLSSocket(sock, { isServer: true, key, cert });
        tls.on('error', () => undefined);
        tls.once('data', () => sock.end('500 OOPS: priv_sock_get_cmd\r\n'));
      });
      sock.on('error', () => undefined);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const port = (server.address() as AddressInfo).port;
      const t = new FtpTransport(parseLocation(`${withPort(S.TP_FTPS_URL, port)}/x`) as never, { password: 'p', ca: S.TP_FTPS_CA, retries: 0 });
      const e = await errorOf(t.stat('x'));
      await t.close();
      expect(e?.message).toMatch(/broke off TLS and sent plain text.*500 OOPS.*server's log/);
      expect(e?.message).toContain(`127.0.0.1:${port}`);
    } finally {
      server.close();
    }
  });

  it('a wrong password is refused at once, not retried, and never printed', async () => {
    const started = Date.now();
    const e = await errorOf((await open(S.TP_FTP_URL, { password: 'wrong-password-123' })).stat('x'));
    expect(e?.message).toMatch(/login refused/);
    expect(e?.retryable).toBe(false);
    expect(Date.now() - started).toBeLessThan(10_000);
    const cli = await tarport(['ls', S.TP_FTP_URL], { TARPORT_PASSWORD: 'wrong-password-123' });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/login refused/);
    expect(cli.stderr + cli.stdout).not.toContain('wrong-password-123');
  });

  it('a server that is down gets a message naming the URL and what to check', async () => {
    const e = await errorOf((await open(withPort(S.TP_FTP_URL, 1), {}, 'x')).stat('x').catch((x) => Promise.reject(x)));
    expect(e?.message).toMatch(/cannot reach the server/);
    expect(e?.message).toMatch(/ftp:\/\/[^@]+@127\.0\.0\.1:1\//);
  }, 60_000);

  it('a read-only folder: the upload fails, says so, and leaves nothing', async () => {
    const ro = join(S.TP_SERVER_HOME, `ro-${randomBytes(3).toString('hex')}`);
    await mkdir(ro);
    await chmod(ro, 0o555);
    // each server's own word: vsftpd's 553 reply, the SFTP status code's name
    const said = [
      [S.TP_FTP_URL, /: refused \(553 [^)]*\); check that the path exists and the user may write there$/],
      [S.TP_SFTP_URL, /: permission denied; check that the user may write there$/],
    ] as const;
    for (const [url, message] of said) {
      const sub = ro.slice(S.TP_SERVER_HOME.length + 1);
      const t = await open(url, {}, sub);
      const e = await errorOf(t.write('f', () => Readable.from([Buffer.from('x')])));
      expect(e?.message).toMatch(message);
      expect(e?.message).toContain(`upload f on ${url}/${sub}: `);
      expect(e?.retryable).toBe(false);
    }
    expect(await readdir(ro)).toEqual([]);
  });
});

describe('end to end over the network', () => {
  it('a push over SFTP and a pull over FTPS: the image runs in the consumer daemon', async () => {
    const env = realEnv();
    const sub = `e2e-${randomBytes(4).toString('hex')}`;
    const push = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', `${S.TP_SFTP_URL}/${sub}`, '--name', 'tarport-test/remote:1', '--identity', S.TP_SFTP_IDENTITY, '--known-hosts', S.TP_SFTP_KNOWN_HOSTS]);
    expect(push.code, push.stderr).toBe(0);
    const ls = await tarport(['ls', `${S.TP_FTP2_URL}/${sub}`, '--json'], { TARPORT_PASSWORD: S.TP_FTP_PASSWORD });
    expect(ls.code, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout).releases[0]).toMatchObject({ name: 'tarport-test/remote', tag: '1', version: 1 });
    const pull = await tarport(['pull', '--from', `${S.TP_FTPS_URL}/${sub}`, '--ca', S.TP_FTPS_CA, '--state', await tempDir()], { TARPORT_PASSWORD: S.TP_FTP_PASSWORD, DOCKER_HOST: env.consumer });
    expect(pull.code, pull.stderr).toBe(0);
    const out = await docker('consumer', 'run', '--rm', '--network', 'none', 'tarport-test/remote:1', '/bin/cat', '/app/hello.txt');
    expect(out).toBe('hello from v1');
  });
});
