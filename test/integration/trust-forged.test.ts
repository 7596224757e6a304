import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { constants, createDeflateRaw } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { decryptStream, encryptStream, loadDecryptionKey, loadRecipients } from '../../src/crypto/index.js';
import { compressed, flipBlock2, forge, literal, literalToEnd, packet, seipd, pkesk, ciphertextOffset, injectedCompressedLiteral } from '../forge.js';
import { ROOT, docker, emptyDaemon, fixture, realEnv, tarport, tempDir } from '../helpers.js';

// Forged encrypted messages, refused by tarport and, as a second opinion, by gpg; and forged
// releases (a plaintext layer in place of an encrypted one, a config that inflates to 500 MB)
// refused by the consumer with exit 3.

const run = promisify(execFile);
const env = realEnv();
let dir: string;
let site: { pub: string; sec: string; armored: string };
let gnupg: string;

beforeAll(async () => {
  dir = await tempDir();
  const r = await tarport(['keys', 'generate', '--uid', 'site <site@example.invalid>', '--out', join(dir, 'site'), '--type', 'ecc']);
  expect(r.code, r.stderr).toBe(0);
  site = { pub: join(dir, 'site.pub.asc'), sec: join(dir, 'site.sec.asc'), armored: await readFile(join(dir, 'site.pub.asc'), 'utf8') };
  gnupg = await tempDir('tarport-gnupg-');
  await run('gpg', ['--homedir', gnupg, '--batch', '--import', site.sec]);
});

/** gpg's exit code and stderr for decrypting `file`. */
async function gpgDecrypt(file: string): Promise<{ code: number; stderr: string; stdout: Buffer }> {
  return new Promise((resolve) => {
    execFile('gpg', ['--homedir', gnupg, '--batch', '--yes', '--pinentry-mode', 'loopback', '--output', '-', '--decrypt', file], { encoding: 'buffer', maxBuffer: 64 << 20 }, (e, stdout, stderr) => {
      resolve({ code: e ? ((e as { code?: number }).code ?? -1) : 0, stderr: stderr.toString(), stdout });
    });
  });
}

async function ours(file: string): Promise<{ error?: { code: string; message: string }; out: Buffer }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of await decryptStream(createReadStream(file), await loadDecryptionKey(site.sec), 'forged', { maxBytes: 1 << 30 })) chunks.push(c as Buffer);
  } catch (e) {
    return { error: { code: (e as { code: string }).code, message: (e as Error).message }, out: Buffer.concat(chunks) };
  }
  return { out: Buffer.concat(chunks) };
}

async function tarportMessage(data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await encryptStream(Readable.from([data]), await loadRecipients([site.pub]))) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const MODIFIED = 'forged: the encrypted message was changed or damaged (OpenPGP modification detection failed)';

describe('forged OpenPGP messages: tarport refuses, gpg refuses the same', () => {
  it('each forged message is refused by both; the unforged controls open in both', async () => {
    const content = Buffer.from('attacker content');
    const zstdLayer = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(100_000)]);
    const real = await tarportMessage(zstdLayer);
    const known = Buffer.concat([Buffer.from([0xcb, 0xff]), u32(zstdLayer.length + 6), Buffer.from([0x62, 0, 0, 0, 0, 0]), zstdLayer]).subarray(0, 14);
    const quick = Buffer.from(real);
    quick[ciphertextOffset(real) + 15]! ^= 1;
    const sessionKey = randomBytes(32);
    // each row: name, message, what tarport says
    const forged: [string, Buffer, string][] = [
      ['compressed, definite length, wrong MDC', await forge(site.armored, compressed(literal(content)), { mdc: 'wrong' }), MODIFIED],
      ['compressed, indefinite length (as gpg writes), wrong MDC', await forge(site.armored, compressed(literalToEnd(content), { framing: 'indefinite' }), { mdc: 'wrong' }), MODIFIED],
      ['bytes after the deflate stream, wrong MDC', await forge(site.armored, compressed(literalToEnd(content), { framing: 'indefinite', trailing: randomBytes(300) }), { mdc: 'wrong' }), MODIFIED],
      ['block 2 of a tarport message bit-flipped into a compressed packet (no key)', flipBlock2(real, known, injectedCompressedLiteral()), MODIFIED],
      ['quick check broken (no key)', quick, MODIFIED],
      ['no MDC packet', await forge(site.armored, literal(content), { mdc: 'none' }), MODIFIED],
      ['a packet other than content, wrong MDC', await forge(site.armored, packet(13, content), { mdc: 'wrong' }), MODIFIED],
      ['data after the encrypted packet', Buffer.concat([await pkesk(site.armored, sessionKey), seipd(sessionKey, literal(content)), Buffer.from([0xcb, 0x01, 0x62])]), 'forged: data after the end of the encrypted OpenPGP packet'],
    ];
    const accepted: string[] = [];
    for (const [name, message, says] of forged) {
      const file = join(dir, `forged-${accepted.length}-${randomBytes(3).toString('hex')}`);
      await writeFile(file, message);
      const t = await ours(file);
      if (!t.error) accepted.push(`tarport: ${name}`);
      expect(t.error?.message, name).toBe(says);
      const g = await gpgDecrypt(file);
      expect(g.code, `gpg on ${name}: ${g.stderr}`).not.toBe(0);
    }
    expect(accepted).toEqual([]);

    // stricter than gpg: messages with a valid MDC (anyone with the public key makes them) whose
    // framing RFC 4880 forbids or whose compressed packet carries bytes the inflater never reads;
    // gpg 2.2 opens both, tarport refuses both
    for (const [name, message, says] of [
      ['bytes after the deflate stream, valid MDC', await forge(site.armored, compressed(literalToEnd(content), { framing: 'indefinite', trailing: randomBytes(300) })), 'forged: data after the end of the compressed stream'],
      ['a first partial length of 256 bytes, valid MDC', await forge(site.armored, literal(randomBytes(5000)), { partial: [256, 256] }), 'forged: an OpenPGP packet whose first partial body length is under the 512 bytes RFC 4880 requires'],
    ] as const) {
      const file = join(dir, `strict-${randomBytes(3).toString('hex')}`);
      await writeFile(file, message);
      expect((await ours(file)).error?.message, name).toBe(says);
      expect((await gpgDecrypt(file)).code, `gpg on ${name}`).toBe(0);
    }

    // the controls: the same kinds of message, unforged, open in both and say the same
    for (const [name, message, want] of [
      ['compressed, indefinite', await forge(site.armored, compressed(literalToEnd(content), { framing: 'indefinite' })), content],
      ['1-byte partial lengths after a first of 512', await forge(site.armored, literal(zstdLayer), { partial: [512, 1] }), zstdLayer],
      ['a tarport message', real, zstdLayer],
    ] as const) {
      const file = join(dir, `control-${randomBytes(3).toString('hex')}`);
      await writeFile(file, message);
      const t = await ours(file);
      expect(t.error, name).toBeUndefined();
      expect(t.out.equals(want), name).toBe(true);
      const g = await gpgDecrypt(file);
      expect(g.code, `gpg on ${name}: ${g.stderr}`).toBe(0);
      expect(g.stdout.equals(want), name).toBe(true);
    }
  });
});

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** Pushes the fixture encrypted to the site, unsigned (the attacker writes records then). */
async function encryptedRepo(name: string, tag: string): Promise<string> {
  const repo = join(dir, `${name}-${randomBytes(3).toString('hex')}`);
  const r = await tarport(['push', '--init', fixture('app-v1.tar'), '--to', repo, '--name', tag, '--encrypt-to', site.pub]);
  expect(r.code, r.stderr).toBe(0);
  return repo;
}

interface Desc {
  digest: string;
  size: number;
  encryption?: unknown;
}

/** Rewrites the only release record of `repo` as an attacker with write access would, and pins it in the catalog. */
async function editRecord(repo: string, edit: (record: { config: Desc; layers: Desc[] }) => void): Promise<void> {
  const catalogPath = join(repo, 'tarport/catalog.json');
  const catalog = JSON.parse(await readFile(catalogPath, 'utf8')) as { releases: { name: string; tag: string; record: string; digest: string; size: number }[] };
  const entry = catalog.releases[0]!;
  const folder = join(repo, 'tarport/releases', encodeURIComponent(entry.name), entry.tag);
  const record = JSON.parse(await readFile(join(folder, entry.record), 'utf8')) as { config: Desc; layers: Desc[]; version: number };
  edit(record);
  const bytes = Buffer.from(JSON.stringify(record, null, 2));
  const hex = createHash('sha256').update(bytes).digest('hex');
  await rm(join(folder, entry.record));
  entry.record = `${String(record.version).padStart(8, '0')}-${hex.slice(0, 16)}.json`;
  entry.digest = `sha256:${hex}`;
  entry.size = bytes.length;
  await writeFile(join(folder, entry.record), bytes);
  await writeFile(catalogPath, JSON.stringify(catalog, null, 2));
}

async function putBlob(repo: string, data: Buffer): Promise<Desc> {
  const hex = createHash('sha256').update(data).digest('hex');
  await mkdir(join(repo, 'blobs/sha256'), { recursive: true });
  await writeFile(join(repo, 'blobs/sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

/** A deflate stream of `n` zero bytes after `head`, made a chunk at a time (never whole in memory). */
async function deflatedZeros(head: Buffer, n: number): Promise<Buffer> {
  const z = createDeflateRaw({ level: 9, strategy: constants.Z_DEFAULT_STRATEGY });
  const out: Buffer[] = [];
  z.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((resolve, reject) => z.on('end', resolve).on('error', reject));
  z.write(head);
  const zeros = Buffer.alloc(1 << 20);
  for (let left = n; left > 0; left -= zeros.length) {
    if (!z.write(left >= zeros.length ? zeros : zeros.subarray(0, left))) await new Promise((r) => z.once('drain', r));
  }
  z.end();
  await done;
  return Buffer.concat(out);
}

/** Loads a hook that writes the process's peak RSS (KiB) to `file` when it exits. */
async function rssHook(file: string): Promise<string> {
  const hook = join(dir, `rss-${randomBytes(3).toString('hex')}.mjs`);
  await writeFile(hook, `import { writeFileSync } from 'node:fs';\nprocess.on('exit', () => writeFileSync(${JSON.stringify(file)}, String(process.resourceUsage().maxRSS)));\n`);
  return `--import=${hook}`;
}

describe('forged encrypted releases: the consumer refuses (exit 3)', () => {
  it('a plaintext layer and config in place of encrypted ones: refused with --decrypt-key; --allow-unencrypted loads; the missing --trust is warned about on stderr and in --json', async () => {
    const tag = `tarport-test/forged-plain-${randomBytes(3).toString('hex')}:1`;
    const repo = await encryptedRepo('plain-swap', tag);
    const plain = join(dir, `plain-${randomBytes(3).toString('hex')}`);
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', plain, '--name', tag])).code).toBe(0);
    for (const b of await readdir(join(plain, 'blobs/sha256'))) await copyFile(join(plain, 'blobs/sha256', b), join(repo, 'blobs/sha256', b));
    const plainRecord = async () => {
      const cat = JSON.parse(await readFile(join(plain, 'tarport/catalog.json'), 'utf8')) as { releases: { name: string; tag: string; record: string }[] };
      const e = cat.releases[0]!;
      return JSON.parse(await readFile(join(plain, 'tarport/releases', encodeURIComponent(e.name), e.tag, e.record), 'utf8')) as { config: Desc; layers: Desc[] };
    };
    const swapped = await plainRecord();
    await editRecord(repo, (r) => {
      r.config = swapped.config;
      r.layers = swapped.layers;
    });
    // gpg's opinion of the swapped-in layer: not an OpenPGP message at all
    expect((await gpgDecrypt(join(repo, 'blobs/sha256', swapped.layers[0]!.digest.slice(7)))).code).not.toBe(0);

    const refused = await tarport(['pull', '--from', repo, '--state', join(dir, `s-${randomBytes(3).toString('hex')}`), '--decrypt-key', site.sec, '--json'], { DOCKER_HOST: env.consumer });
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toMatch(/its config sha256:[0-9a-f]{64}(, layer sha256:[0-9a-f]{64})+ are not encrypted, and --decrypt-key expects encrypted releases/);
    expect(refused.stderr).toMatch(/warning: --decrypt-key without --trust: releases are NOT authenticated/);
    // one document: what loaded and what was refused, side by side
    const report = JSON.parse(refused.stdout) as { refused: { code: string }[]; warnings: string[] };
    expect(report.refused.map((r) => r.code)).toEqual(['UNTRUSTED']);
    expect(report.warnings).toEqual([expect.stringMatching(/^--decrypt-key without --trust: releases are NOT authenticated/)]);
    await expect(docker('consumer', 'image', 'inspect', tag)).rejects.toThrow();

    const allowed = await tarport(['pull', '--from', repo, '--state', join(dir, `s-${randomBytes(3).toString('hex')}`), '--decrypt-key', site.sec, '--allow-unencrypted', '--json'], { DOCKER_HOST: env.consumer });
    expect(allowed.code, allowed.stderr).toBe(0);
    const doc = JSON.parse(allowed.stdout) as { loaded: unknown[]; warnings: string[] };
    expect(doc.loaded).toHaveLength(1);
    expect(doc.warnings).toEqual([expect.stringMatching(/^--decrypt-key without --trust: releases are NOT authenticated/)]);
    await docker('consumer', 'rmi', tag);
  });

  it('layers whose content is right but whose MDC is wrong: refused (exit 3), nothing loaded; the same layers with a valid MDC load (encryption alone does not authenticate)', async () => {
    // the daemon must lack these layers, or the load would not read them at all
    await emptyDaemon('consumer');
    const tag = `tarport-test/forged-mdc-${randomBytes(3).toString('hex')}:1`;
    const repo = await encryptedRepo('wrong-mdc', tag);
    const plain = join(dir, `plain-${randomBytes(3).toString('hex')}`);
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', plain, '--name', tag])).code).toBe(0);
    const plainLayers = new Map<string, string>(); // diffId → the plain repository's stored layer
    const pcat = JSON.parse(await readFile(join(plain, 'tarport/catalog.json'), 'utf8')) as { releases: { name: string; tag: string; record: string }[] };
    const pe = pcat.releases[0]!;
    const prec = JSON.parse(await readFile(join(plain, 'tarport/releases', encodeURIComponent(pe.name), pe.tag, pe.record), 'utf8')) as { layers: (Desc & { diffId: string })[] };
    for (const l of prec.layers) plainLayers.set(l.diffId, join(plain, 'blobs/sha256', l.digest.slice(7)));
    const forgeLayers = async (mdc: 'good' | 'wrong') => {
      const descs = new Map<string, Desc>();
      for (const [diffId, file] of plainLayers) descs.set(diffId, await putBlob(repo, await forge(site.armored, literal(await readFile(file)), { mdc })));
      await editRecord(repo, (r) => {
        r.layers = (r.layers as (Desc & { diffId: string })[]).map((l) => ({ ...l, ...descs.get(l.diffId)! }));
      });
      return descs;
    };
    const wrong = await forgeLayers('wrong');
    expect((await gpgDecrypt(join(repo, 'blobs/sha256', [...wrong.values()][0]!.digest.slice(7)))).code).not.toBe(0);
    const refused = await tarport(['pull', '--from', repo, '--state', join(dir, `s-${randomBytes(3).toString('hex')}`), '--decrypt-key', site.sec], { DOCKER_HOST: env.consumer });
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toMatch(/layer sha256:[0-9a-f]{64} of tarport-test\/forged-mdc-[0-9a-f]+:1: the encrypted message was changed or damaged \(OpenPGP modification detection failed\)/);
    await expect(docker('consumer', 'image', 'inspect', tag)).rejects.toThrow();

    await forgeLayers('good');
    const loaded = await tarport(['pull', '--from', repo, '--state', join(dir, `s-${randomBytes(3).toString('hex')}`), '--decrypt-key', site.sec], { DOCKER_HOST: env.consumer });
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stderr).toMatch(/NOT authenticated/);
    await docker('consumer', 'rmi', tag);
  });

  it('poll with --decrypt-key and no --trust starts with a warning event', async () => {
    const repo = await encryptedRepo('poll-warning', `tarport-test/poll-warning-${randomBytes(3).toString('hex')}:1`);
    const child = spawn(process.execPath, [join(ROOT, 'bin/tarport.js'), 'poll', 'nothing/followed', '--from', repo, '--state', join(dir, `s-${randomBytes(3).toString('hex')}`), '--decrypt-key', site.sec, '--interval', '1h', '--json'], {
      env: { ...process.env, DOCKER_HOST: env.consumer },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    // the start line comes first (what runs, from where), the warning right after it
    const first = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no warning event within 60 s: ${out}`)), 60_000);
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const lines = out.split('\n').filter((l) => l.includes('"warning"'));
        if (lines.length > 0) {
          clearTimeout(timer);
          resolve(lines[0]!);
        }
      });
    });
    child.kill('SIGTERM');
    expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running after 30 s'), 30_000))])).toBe(0);
    expect(JSON.parse(first)).toMatchObject({ kind: 'warning', message: expect.stringMatching(/^--decrypt-key without --trust: releases are NOT authenticated/) });
  });

  it('a config that inflates to 500 MB (a 0.5 MB message made with the public key only): refused at 16 MiB, peak RSS under 256 MiB', async () => {
    const tag = `tarport-test/forged-bomb-${randomBytes(3).toString('hex')}:1`;
    const repo = await encryptedRepo('bomb', tag);
    const deflated = await deflatedZeros(Buffer.from([0xaf, 0x62, 0, 0, 0, 0, 0]), 500 << 20);
    const message = await forge(site.armored, Buffer.concat([Buffer.from([0xa3, 0x01]), deflated]));
    expect(message.length).toBeLessThan(1 << 20);
    const desc = await putBlob(repo, message);
    await editRecord(repo, (r) => {
      r.config = { ...r.config, digest: desc.digest, size: desc.size };
    });
    const rssFile = join(dir, `rss-${randomBytes(3).toString('hex')}`);
    const r = await tarport(['pull', '--from', repo, '--state', join(dir, `s-${randomBytes(3).toString('hex')}`), '--decrypt-key', site.sec], { DOCKER_HOST: env.consumer, NODE_OPTIONS: await rssHook(rssFile) });
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/config of tarport-test\/forged-bomb-[0-9a-f]+:1: decrypts to more than the 16777216 bytes allowed/);
    const peakKiB = Number(await readFile(rssFile, 'utf8'));
    console.log(`config bomb (${message.length} byte message, 500 MiB inflated): peak RSS ${(peakKiB / 1024).toFixed(0)} MiB`);
    expect(peakKiB).toBeGreaterThan(0);
    expect(peakKiB).toBeLessThan(256 * 1024);
    await expect(docker('consumer', 'image', 'inspect', tag)).rejects.toThrow();
  });
});
