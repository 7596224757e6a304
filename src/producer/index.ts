export { publishArchive, DEFAULT_CATALOG_TTL_MS, type PublishOptions, type PublishResult, type PublishEvent, type GrowingArchive } from './publish.js';
export { watchFolder, ignoredName, EXIT_LEFT_FOR_NEXT_RUN, type WatchOptions, type WatchEvent, type WatchSummary } from './watch.js';
export { parseNameRule, nameFor, UnnamedArchiveError, type NameRule } from './naming.js';
