export { syncRepos, type SyncEvent, type SyncOptions, type SyncResult } from './sync.js';
export { InventorySchema, parseInventory, type Inventory } from './inventory.js';
export { putTool, readToolFiles, TOOL_FOLDER, SUMS_FILE, SUMS_SIGNATURE, type ToolFile, type ToolResult, type ToolEvent } from './tool.js';
