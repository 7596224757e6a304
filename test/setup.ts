import { afterAll } from 'vitest';
import { removeTempDirs } from './helpers.js';

// Every test file's temp folders go when the file ends (see removeTempDirs).
afterAll(removeTempDirs);
