// USB sticks as users carry them, for the air-gap tests: a FAT32 image mounted with fusefat, and an
// exFAT file system on a loop device mounted with exfat-fuse (both case-insensitive, no symlinks).
// scripts/lib/common.sh installs the tools; the image lives in the run folder, so that the scripts'
// clean-up unmounts it and frees its loop device should a test die first.
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './helpers.js';

const run = promisify(execFile);

export type StickKind = 'fat32' | 'exfat';

export interface Stick {
  readonly kind: StickKind;
  /** Where the stick is mounted. */
  readonly path: string;
  unmount(): Promise<void>;
}

async function mounted(path: string): Promise<boolean> {
  return (await readFile('/proc/mounts', 'utf8')).split('\n').some((l) => l.split(' ')[1] === path);
}

async function waitMounted(path: string, what: string): Promise<void> {
  for (const until = Date.now() + 10_000; !(await mounted(path)); ) {
    if (Date.now() > until) throw new Error(`${what} did not mount at ${path} within 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A fresh, empty stick of `mib` MiB, mounted; unmount() takes it away again. */
export async function mountStick(kind: StickKind, mib = 128): Promise<Stick> {
  const base = process.env.TP_RUN ? join(process.env.TP_RUN, 'sticks') : await tempDir('tarport-sticks-');
  await mkdir(base, { recursive: true });
  const dir = join(base, `${kind}-${process.pid}-${Math.random().toString(16).slice(2, 10)}`);
  const image = `${dir}.img`;
  await mkdir(dir);
  if (kind === 'fat32') {
    await run('mkfs.vfat', ['-F', '32', '-C', image, String(mib * 1024)]);
    await run('fusefat', ['-o', 'rw+', image, dir]);
    await waitMounted(dir, 'fusefat');
    return { kind, path: dir, unmount: () => takeAway(dir, image) };
  }
  await run('truncate', ['-s', `${mib}M`, image]);
  const dev = (await run('losetup', ['-f', '--show', image])).stdout.trim();
  try {
    await run('mkfs.exfat', [dev]);
    await run('mount.exfat-fuse', [dev, dir]);
    await waitMounted(dir, 'exfat-fuse');
  } catch (e) {
    await run('losetup', ['-d', dev]).catch(() => undefined);
    throw e;
  }
  return { kind, path: dir, unmount: () => takeAway(dir, image, dev) };
}

/**
 * Whether fusefat is built on libfuse 3 (Debian 13). That build wedges once a FAT32 stick is full:
 * after the write that did not fit, every access to the stick waits in the kernel for good (seen
 * here: `ls` of it in state D), so no test can fill one.
 */
export async function fusefatOnFuse3(): Promise<boolean> {
  const { stdout } = await run('sh', ['-c', 'ldd "$(command -v fusefat)"']);
  return stdout.includes('libfuse3');
}

async function takeAway(dir: string, image: string, dev?: string): Promise<void> {
  // as root a FUSE mount unmounts as any other (fusermount is fusermount3 on libfuse 3)
  await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
  if (dev) await run('losetup', ['-d', dev]);
  await rm(image, { force: true });
  await rm(dir, { recursive: true, force: true });
}
