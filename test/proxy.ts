// The cutting proxy lives beside the bench, which measures re-sent bytes with it too.
export { CuttingProxy } from '../scripts/lib/cutproxy.mjs';
