import { CountingTransport, FileTransport, MemoryTransport } from '../../src/transport/index.js';
import { tempDir } from '../helpers.js';
import { transportContract } from '../transport-contract.js';

transportContract('memory', async () => new MemoryTransport());
transportContract('file', async () => new FileTransport(await tempDir()));
transportContract('counting(file)', async () => new CountingTransport(new FileTransport(await tempDir())));
