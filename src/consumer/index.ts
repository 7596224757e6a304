export { pull, type PullOptions, type PullResult, type PullEvent, type Subscription } from './pull.js';
export { poll, type PollOptions, type PollEvent } from './poll.js';
export { StateStore } from './state.js';
export { ObjectCache } from './cache.js';
export { unauthenticatedWarning } from './encryption.js';
