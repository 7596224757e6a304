export { PodmanRuntime } from './runtime.js';
