export { pull, type PullOptions, type PullResult, type PullEvent, type Subscription } from './pull.js';
export { StateStore } from './state.js';
export { ObjectCache } from './cache.js';
