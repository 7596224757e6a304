// A worker thread of LocalCopier: copies or checks one local file at a time, off the main thread.
import { parentPort } from 'node:worker_threads';
import { TarportError } from '../errors.js';
import { checkFile, copyVerified } from './localcopy.js';

type Msg = { id: number; job: { op: 'copy'; from: string; to: string } | { op: 'check'; path: string }; expected: { digest: string; size: number }; what: string };

parentPort!.on('message', (m: Msg) => {
  const work = m.job.op === 'copy' ? copyVerified(m.job.from, m.job.to, m.expected, m.what).then(() => true) : checkFile(m.job.path, m.expected, m.what);
  work.then(
    (ok) => parentPort!.postMessage({ id: m.id, ok }),
    (e: unknown) => {
      const t = e instanceof TarportError ? e : new TarportError('INTERNAL', (e as Error).message);
      parentPort!.postMessage({ id: m.id, error: { code: t.code, message: t.message, retryable: t.retryable } });
    },
  );
});
