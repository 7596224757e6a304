import { execFileSync } from 'node:child_process';
import { appendFile, cp, readFile, readdir, rename, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// The hostile repository corpus: repositories that lie, made from an honest one (one release pushed
// by the test) by the change each case is named after. Every case has a folder `outside` beside the
// repository, whose files hold SECRET: no byte of them may reach any message, and none of them may be
// written or deleted by any command.

export const SECRET = 'TARPORT-CORPUS-SECRET-7f3a9c';

export type Command = 'ls' | 'pull' | 'check' | 'gc' | 'sync';

export interface RepoCase {
  readonly name: string;
  /** Commands this lie concerns (the others never read what it changes). */
  readonly commands: readonly Command[];
  /** Exit codes accepted: 3 for a refusal, 1 where the fault is I/O (a FIFO, a device), 0 where the lie is left out and said. */
  readonly codes: readonly number[];
  /** Which defence it waits on, when it is not in this branch's files (for the report). */
  readonly defence: 'repo caps (this branch)' | 'transport (branch i13-faults)' | 'names and sequences (branch i13-faults)';
  /** Turns the honest repository at `repo` into the lying one; `outside` is the host folder. */
  readonly make: (repo: string, outside: string) => Promise<void>;
}

const releasesDir = (repo: string) => join(repo, 'tarport', 'releases');

async function recordPath(repo: string): Promise<string> {
  const base = releasesDir(repo);
  const [name] = await readdir(base);
  const [tag] = await readdir(join(base, name!));
  const [file] = (await readdir(join(base, name!, tag!))).filter((f) => f.endsWith('.json'));
  return join(base, name!, tag!, file!);
}

async function editCatalog(repo: string, edit: (c: Record<string, unknown> & { releases: Record<string, unknown>[] }) => void): Promise<void> {
  const p = join(repo, 'tarport', 'catalog.json');
  const c = JSON.parse(await readFile(p, 'utf8'));
  edit(c);
  await writeFile(p, JSON.stringify(c, null, 2));
}

/** Moves `rel` of the repository into `outside` and leaves a symlink to it in its place. */
async function linkOut(repo: string, outside: string, rel: string): Promise<void> {
  const target = join(outside, rel.replace(/\//g, '_'));
  await rename(join(repo, rel), target);
  await symlink(target, join(repo, rel));
}

/** The object of the release's first layer: what a pull into an empty daemon must read. */
async function layerBlob(repo: string): Promise<string> {
  const rec = JSON.parse(await readFile(await recordPath(repo), 'utf8')) as { layers: { digest: string }[] };
  return join(repo, 'blobs', 'sha256', rec.layers[0]!.digest.slice(7));
}

const ALL: readonly Command[] = ['ls', 'pull', 'check', 'gc', 'sync'];

export const repoCases: readonly RepoCase[] = [
  {
    name: 'catalog-linked-to-a-host-file',
    commands: ALL,
    codes: [3],
    defence: 'transport (branch i13-faults)',
    make: async (repo, outside) => {
      await writeFile(join(outside, 'host-config'), `${SECRET}\nnot a catalog\n`);
      await rm(join(repo, 'tarport', 'catalog.json'));
      await symlink(join(outside, 'host-config'), join(repo, 'tarport', 'catalog.json'));
    },
  },
  {
    name: 'blobs-folder-linked-out',
    commands: ['pull', 'check', 'gc', 'sync'],
    codes: [3],
    defence: 'transport (branch i13-faults)',
    make: async (repo, outside) => {
      await writeFile(join(repo, 'blobs', 'sha256', 'a'.repeat(64)), SECRET); // unreferenced: gc would remove it
      await linkOut(repo, outside, 'blobs');
    },
  },
  {
    name: 'releases-folder-linked-out',
    commands: ['pull', 'check', 'gc', 'sync'],
    codes: [3],
    defence: 'transport (branch i13-faults)',
    make: async (repo, outside) => {
      await linkOut(repo, outside, 'tarport/releases');
      await writeFile(join(outside, 'tarport_releases', 'host-notes.json'), SECRET);
    },
  },
  {
    name: 'tarport-folder-linked-out',
    commands: ALL,
    codes: [3],
    defence: 'transport (branch i13-faults)',
    make: async (repo, outside) => {
      await linkOut(repo, outside, 'tarport');
      await writeFile(join(outside, 'tarport', 'secret.txt'), SECRET);
    },
  },
  {
    name: 'catalog-is-a-fifo',
    commands: ALL,
    codes: [1, 3],
    defence: 'transport (branch i13-faults)',
    make: async (repo) => {
      await rm(join(repo, 'tarport', 'catalog.json'));
      execFileSync('mkfifo', [join(repo, 'tarport', 'catalog.json')]);
    },
  },
  {
    name: 'blob-linked-to-dev-zero',
    commands: ['pull', 'check', 'sync'],
    codes: [1, 3],
    defence: 'transport (branch i13-faults)',
    make: async (repo) => {
      const blob = await layerBlob(repo);
      await rm(blob);
      await symlink('/dev/zero', blob);
    },
  },
  {
    name: 'blob-is-a-device',
    commands: ['pull', 'check', 'sync'],
    codes: [1, 3],
    defence: 'transport (branch i13-faults)',
    make: async (repo) => {
      // a character device (1,5: what /dev/zero is) in the object's place; needs CAP_MKNOD (root)
      const blob = await layerBlob(repo);
      await rm(blob);
      execFileSync('mknod', [blob, 'c', '1', '5']);
    },
  },
  {
    name: 'catalog-pins-a-huge-record',
    commands: ['pull', 'check', 'gc', 'sync'],
    codes: [3],
    defence: 'repo caps (this branch)',
    make: async (repo) => {
      // a record of 1.5 GB (sparse: no disk), pinned at that size by the catalog
      const rec = await recordPath(repo);
      await truncate(rec, 1_500_000_000);
      await editCatalog(repo, (c) => {
        c.releases[0]!.size = 1_500_000_000;
      });
    },
  },
  {
    name: 'record-larger-than-the-catalog-pins',
    commands: ['pull', 'sync'],
    codes: [3],
    defence: 'repo caps (this branch)',
    make: async (repo) => {
      await appendFile(await recordPath(repo), ' '.repeat(100_000));
    },
  },
  {
    name: 'blob-longer-than-its-record-says',
    commands: ['pull', 'check', 'sync'],
    codes: [3],
    defence: 'repo caps (this branch)',
    make: async (repo) => {
      await appendFile(await layerBlob(repo), Buffer.alloc(8 << 20, 7));
    },
  },
  {
    name: 'bad-percent-encoding-in-a-folder-name',
    // sync copies what the catalog lists, and never reads a folder it does not name; check and gc
    // leave a folder no tarport wrote out of every listing (check names it as a warning), so one
    // such folder does not stop every command on the repository
    commands: ['check', 'gc'],
    codes: [0],
    defence: 'names and sequences (branch i13-faults)',
    make: async (repo) => {
      await cp(join(releasesDir(repo), 'corpus%2Fapp'), join(releasesDir(repo), 'bad%zz'), { recursive: true });
    },
  },
  {
    name: 'terminal-escapes-in-names',
    commands: ALL,
    codes: [3],
    defence: 'names and sequences (branch i13-faults)',
    make: async (repo) => {
      // a name no image can have, which clears the screen and sets the terminal's title if printed raw
      await editCatalog(repo, (c) => {
        c.releases.push({ ...c.releases[0]!, name: 'evil\u001b[2J\u001b]0;owned\u0007', tag: '1\u001b[31m' });
      });
    },
  },
  {
    name: 'catalog-sequence-past-2^53',
    commands: ['ls', 'pull', 'check', 'sync'],
    codes: [3],
    defence: 'names and sequences (branch i13-faults)',
    make: async (repo) => {
      const p = join(repo, 'tarport', 'catalog.json');
      await writeFile(p, (await readFile(p, 'utf8')).replace(/"sequence": \d+/, '"sequence": 9007199254740993'));
    },
  },
];
