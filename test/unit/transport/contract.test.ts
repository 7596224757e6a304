// The transport contract (test/transport-contract.ts) on the transports that need no server:
// memory.ts, file.ts and counting.ts. FTP, FTPS and SFTP run it in test/integration/transports.test.ts.
import { CountingTransport, FileTransport, MemoryTransport } from '../../../src/transport/index.js';
import { tempDir } from '../../helpers.js';
import { transportContract } from '../../transport-contract.js';

transportContract('memory', async () => new MemoryTransport());
transportContract('file', async () => new FileTransport(await tempDir()));
transportContract('counting(file)', async () => new CountingTransport(new FileTransport(await tempDir())));
