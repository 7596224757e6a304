export { Repository, catalogEntryOf, signatureKey, partKey, partsKey, type PartList, MAX_RECORD_BYTES, MAX_SMALL_BLOB_BYTES, FORMAT_VERSION, type StagedBlob, type ReleaseRef, type Sign } from './repository.js';
export * from './records.js';
export * from './layout.js';
export * from './names.js';
export { checkRepository, collectGarbage, type CheckResult, type Fault, type GcResult } from './maintenance.js';
