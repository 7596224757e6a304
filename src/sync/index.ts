export { syncRepos, type SyncEvent, type SyncOptions, type SyncResult } from './sync.js';
export { InventorySchema, parseInventory, type Inventory } from './inventory.js';
