/** The program's version, written into every release record. Keep in sync with package.json. */
export const VERSION = '0.3.0';
