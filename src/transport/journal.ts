import { createHash, randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeFolders } from '../folders.js';
import * as z from 'zod';

/**
 * What a multipart upload had confirmed when its run ended: kept between runs so that the next run
 * sends only the parts still missing. S3 has ListParts for this, but not every S3-compatible server
 * (s3rver), so the producer keeps its own record. Keyed by the upload's target (endpoint, bucket,
 * key); an upload resumes only a record of the same size and part size.
 */
const EntrySchema = z.strictObject({
  target: z.string(),
  uploadId: z.string().min(1),
  size: z.number().int().nonnegative(),
  partSize: z.number().int().positive(),
  parts: z.array(z.strictObject({ n: z.number().int().positive(), etag: z.string().min(1) })),
});
export type JournalEntry = z.infer<typeof EntrySchema>;

export interface UploadJournal {
  load(target: string): Promise<JournalEntry | undefined>;
  save(entry: JournalEntry): Promise<void>;
  drop(target: string): Promise<void>;
}

/**
 * A journal in a local folder (the producer's state folder): one small JSON file per upload under
 * way, replaced by rename. An unreadable record is no record (the upload starts afresh). A folder
 * that cannot be written (a read-only home, a full disk) costs only the resume: the upload goes on
 * without a record, and `onFault` says so once, so that nobody counts on a resume that cannot come.
 */
export function folderJournal(dir: string, onFault: (message: string) => void): UploadJournal {
  const file = (target: string) => join(dir, `${createHash('sha256').update(target).digest('hex').slice(0, 32)}.json`);
  let broken = false;
  const fault = (what: string, e: unknown) => {
    if (broken) return;
    broken = true;
    onFault(`cannot ${what} the record of a multipart upload in ${dir} (${(e as Error).message}): the upload goes on, but if it is cut, the next run sends it from the start`);
  };
  return {
    async load(target) {
      try {
        const e = EntrySchema.parse(JSON.parse(await readFile(file(target), 'utf8')));
        return e.target === target ? e : undefined;
      } catch {
        return undefined;
      }
    },
    async save(entry) {
      if (broken) return;
      const tmp = `${file(entry.target)}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        await makeFolders(dir, 0o700);
        await writeFile(tmp, JSON.stringify(entry), { mode: 0o600 });
        await rename(tmp, file(entry.target));
      } catch (e) {
        await rm(tmp, { force: true }).catch(() => undefined);
        fault('write', e);
      }
    },
    async drop(target) {
      // a record left behind is harmless: the next upload of this target checks it against the server
      await rm(file(target), { force: true }).catch((e: unknown) => fault('remove', e));
    },
  };
}
