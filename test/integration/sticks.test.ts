import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPortableFileName } from '../../src/repo/index.js';
import { docker, emptyDaemon, filesBelow, fixture, realEnv, tarport, tempDir } from '../helpers.js';
import { fusefatOnFuse3, mountStick, type Stick, type StickKind } from '../sticks.js';

// The air gap on real sticks: a FAT32 image mounted with fusefat and an exFAT file system on a loop
// device mounted with exfat-fuse. Both fold case (two tags that differ only in case must not meet
// in one file) and have no symlinks; FAT32 holds no file of 4 GiB, which --max-file-size splits.

const env = realEnv();
const sticks: Stick[] = [];

beforeAll(async () => {
  await emptyDaemon('consumer');
});

afterAll(async () => {
  for (const s of sticks.splice(0)) await s.unmount();
});

describe.each(['fat32', 'exfat'] as StickKind[])('a %s stick', (kind) => {
  it('carries two tags that differ only in case, split into parts, checks clean, and loads both on the other side; the next sync adds only the new release', async () => {
    const stick = await mountStick(kind);
    sticks.push(stick);
    const id = randomBytes(3).toString('hex');
    const src = await tempDir();
    const name = `tarport-test/stick-${kind}-${id}`;
    expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', src, '--name', `${name}:Live`])).code).toBe(0);
    expect((await tarport(['push', fixture('app-v2.tar'), '--to', src, '--name', `${name}:live`])).code).toBe(0);
    // the tool rides along, as on every delivery to a site without tarport
    const exe = join(src, '..', `tarport-linux-x64-${id}`);
    await writeFile(exe, Buffer.alloc(1 << 20, 'tool'));
    const s1 = await tarport(['sync', '--init', src, stick.path, '--max-file-size', '1M', '--with-tool', exe]);
    expect(s1.code, s1.stderr).toBe(0);
    expect((await readFile(join(stick.path, 'tarport-tool', `tarport-linux-x64-${id}`))).equals(await readFile(exe))).toBe(true);
    const files = (await filesBelow(stick.path)).filter((f) => !f.startsWith('tarport-tool/'));
    for (const f of files) {
      for (const seg of f.split('/')) expect(isPortableFileName(seg), f).toBe(true);
      expect((await stat(join(stick.path, f))).size, f).toBeLessThanOrEqual(1 << 20);
    }
    expect(files.some((f) => f.endsWith('.parts'))).toBe(true);
    const checked = await tarport(['check', stick.path]);
    expect(checked.code, checked.stderr + checked.stdout).toBe(0);

    const state = await tempDir();
    const p = await tarport(['pull', '--from', stick.path, '--state', state], { DOCKER_HOST: env.consumer });
    expect(p.code, p.stderr).toBe(0);
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', `${name}:Live`, '/bin/cat', '/app/hello.txt')).toBe('hello from v1');
    expect(await docker('consumer', 'run', '--rm', '--network', 'none', `${name}:live`, '/bin/cat', '/app/v2.txt')).toBe('hello from v2');

    // a new release on the high side: the next sync copies it, and what the stick had stays
    expect((await tarport(['push', fixture('small-v1.tar'), '--to', src, '--name', `${name}:small`])).code).toBe(0);
    const s2 = await tarport(['sync', src, stick.path, '--max-file-size', '1M', '--json']);
    expect(s2.code, s2.stderr).toBe(0);
    expect((JSON.parse(s2.stdout) as { releasesCopied: number }).releasesCopied).toBe(1);
    expect(s2.stderr).toContain(`release ${name}:small v1: copied`);
    const p2 = await tarport(['pull', '--from', stick.path, '--state', state], { DOCKER_HOST: env.consumer });
    expect(p2.code, p2.stderr).toBe(0);
    expect(p2.stderr).toContain(`${name}:small`);
  }, 300_000);
});

describe('a stick pulled while a write is under way', () => {
  it('the rest of the write is refused (exit 1 in a sync), never written into the empty mount point left on the host\'s disk', async () => {
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const { readdir, rm } = await import('node:fs/promises');
    const { Readable } = await import('node:stream');
    const { openRepository } = await import('../../src/cli/context.js');
    const { sha256 } = await import('../../src/crypto/index.js');
    const stick = await mountStick('fat32', 64);
    try {
      expect((await tarport(['init', stick.path])).code).toBe(0);
      // the repository as the commands open it (its transport wrapped, counting what crosses it)
      const repo = await openRepository(stick.path, '--to', {}, { write: true });
      const tx = await repo.begin();
      const before = Buffer.from('an object copied while the stick was in');
      await tx.putObject(sha256(before), { stream: () => Readable.from([before]) });
      // pulled: the mount goes, its mount point stays, an empty folder on the host's own disk
      await promisify(execFile)('umount', [stick.path]);
      expect(await readdir(stick.path)).toEqual([]);
      const after = Buffer.from('an object copied after the stick went');
      await expect(tx.putObject(sha256(after), { stream: () => Readable.from([after]) })).rejects.toMatchObject({ code: 'IO', retryable: false, message: expect.stringContaining('the repository folder is another folder than when this write began (a stick unplugged, unmounted or swapped?)') });
      await tx.end();
      await repo.close();
      expect(await readdir(stick.path)).toEqual([]);
    } finally {
      await stick.unmount().catch(() => undefined);
      await rm(`${stick.path}.img`, { force: true });
      await rm(stick.path, { recursive: true, force: true });
    }
  });
});

describe('a full stick', () => {
  // FAT32 through fusefat where it is built on libfuse 2 (Debian 12), which answers a write that does
  // not fit with "operation not permitted" and reports no free space; where it is built on libfuse 3
  // (Debian 13) it wedges on a full stick (test/sticks.ts), so there the full stick is exFAT, whose
  // exfat-fuse answers "no space left on device"
  it('sync says the stick is full, or may be (fusefat reports no free space to tell), not "permission denied"; exits 1, and leaves no temporary file', async () => {
    const { rm } = await import('node:fs/promises');
    const kind = (await fusefatOnFuse3()) ? 'exfat' : 'fat32';
    const stick = await mountStick(kind, 40);
    try {
      const src = await tempDir();
      expect((await tarport(['push', '--init', fixture('app-v1.tar'), '--to', src, '--name', 'tarport-test/full:1'])).code).toBe(0);
      // the stick filled up by something else, to its last cluster
      const { open } = await import('node:fs/promises');
      const filler = await open(join(stick.path, 'filler.bin'), 'w');
      const chunk = Buffer.alloc(1 << 20, 1);
      let full: string | undefined;
      try {
        for (;;) await filler.write(chunk);
      } catch (e) {
        full = (e as NodeJS.ErrnoException).code;
      } finally {
        await filler.close().catch(() => undefined);
      }
      const r = await tarport(['sync', '--init', src, join(stick.path, 'repo')]);
      expect(r.code, r.stderr).toBe(1);
      const says = kind === 'exfat' ? ': no space left on device; free space, then run again' : `: the file system refused the write (${full}); it may be full: it answers a full disk so too, and reports no free space to tell; free space, or check that the user may write there, then run again`;
      expect(r.stderr).toContain(says);
      expect(r.stderr).not.toContain('permission denied');
      expect((await filesBelow(stick.path)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    } finally {
      await stick.unmount().catch(() => undefined);
      await rm(`${stick.path}.img`, { force: true });
    }
  });
});
