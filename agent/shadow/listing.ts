import type { ShadowListing, Spool } from '../spool/spool.js';

/** `queue ls --shadow`: the copies this agent keeps for its clients (oldest first, at most `limit`). */
export interface ShadowList {
  copies: ShadowListing[];
  /** Copies not listed because of the limit. */
  more: number;
}

export function listShadow(queue: Spool, limit = 0): ShadowList {
  const total = queue.shadowViews.copyCount();
  const copies = queue.shadowViews.list(limit > 0 ? limit : total);
  return { copies, more: Math.max(0, total - copies.length) };
}
