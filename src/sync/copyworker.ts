// A worker thread of LocalCopier: copies or checks one local file at a time, off the main thread.
import { parentPort } from 'node:worker_threads';
import { TarportError } from '../errors.js';
import { checkFile, copyVerified } from './localcopy.js';

type Msg = { id: number; job: { op: 'copy'; from: string; to: string } | { op: 'check'; path: string }; expected: { digest: string; size: number }; what: string };

parentPort!.on('message', (m: Msg) => {
  // progress goes out at most every 16 MiB: a message per 4 MiB buffer would be noise
  let unsent = 0;
  const onBytes = (n: number) => {
    unsent += n;
    if (unsent >= 16 << 20) {
      parentPort!.postMessage({ id: m.id, bytes: unsent });
      unsent = 0;
    }
  };
  const work =
    m.job.op === 'copy'
      ? copyVerified(m.job.from, m.job.to, m.expected, m.what, undefined, onBytes).then(() => {
          if (unsent > 0) parentPort!.postMessage({ id: m.id, bytes: unsent });
          return true;
        })
      : checkFile(m.job.path, m.expected, m.what);
  work.then(
    (ok) => parentPort!.postMessage({ id: m.id, ok }),
    (e: unknown) => {
      const t = e instanceof TarportError ? e : new TarportError('INTERNAL', (e as Error).message);
      parentPort!.postMessage({ id: m.id, error: { code: t.code, message: t.message, retryable: t.retryable } });
    },
  );
});
