export { publishArchive, DEFAULT_CATALOG_TTL_MS, type PublishOptions, type PublishResult, type PublishEvent } from './publish.js';
