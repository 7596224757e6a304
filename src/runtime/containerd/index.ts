export { ContainerdRuntime, parsePlatform } from './runtime.js';
export { ctr, type CtrOptions } from './ctr.js';
