import { statfsSync } from 'node:fs';
import { addressKey } from '../shared/address.js';
import type { RouteTable } from '../shared/routes.js';
import type { Queue, RecipientState } from './queue.js';

export interface RouteQueueHealth {
  match: string;
  queued: number;
  deferred: number;
  held: number;
  inFlight: number;
  oldestAgeSeconds: number;
}

export interface HealthSnapshot {
  appliedVersion: number;
  controllerConnected: boolean;
  byState: Record<RecipientState, number>;
  total: number;
  oldestAgeSeconds: number;
  routes: RouteQueueHealth[];
  counters: { accepted: number; rejected: number; delivered: number; deferred: number; bounced: number };
  lastDeliveryError: string;
  diskFreeBytes: number;
  uptimeSeconds: number;
}

const NO_ROUTE = '(no route)';

/** Queue depth per route match (the route in force now), so `status` can show what waits for which switchover. */
export function queueByRoute(queue: Queue, table: RouteTable, now: number): RouteQueueHealth[] {
  const byMatch = new Map<string, RouteQueueHealth>();
  for (const row of queue.breakdown()) {
    const match = table.lookup(addressKey(row.rcpt))?.match ?? NO_ROUTE;
    let h = byMatch.get(match);
    if (!h) byMatch.set(match, (h = { match, queued: 0, deferred: 0, held: 0, inFlight: 0, oldestAgeSeconds: 0 }));
    if (row.state === 'inflight') h.inFlight += row.n;
    else h[row.state] += row.n;
    h.oldestAgeSeconds = Math.max(h.oldestAgeSeconds, (now - row.oldest) / 1000);
  }
  return [...byMatch.values()].sort((a, b) => a.match.localeCompare(b.match));
}

export function diskFree(dir: string): number {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return 0;
  }
}
