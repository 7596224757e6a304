import { TarportError } from '../errors.js';

/**
 * A server that lists no folder (an HTTP mirror without autoindex, which pull does not need).
 * Readers that list only to look for a fallback (a catalog copy, another signature) take it as
 * "none there"; the commands that need listings (check, gc, sync from) fail with its advice.
 */
export class ListingUnavailableError extends TarportError {
  constructor(message: string) {
    super('IO', message, { retryable: false });
    this.name = 'ListingUnavailableError';
  }
}
