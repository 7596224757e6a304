export { Repository, catalogEntryOf, MAX_RECORD_BYTES, FORMAT_VERSION, type StagedBlob, type ReleaseRef } from './repository.js';
export * from './records.js';
export * from './layout.js';
export * from './names.js';
