import { addressKey, normalizeDomain } from '../shared/address.js';
import type { RouteTable } from '../shared/routes.js';
import type { RouteQueueHealth } from '../shared/wire.js';
import type { DeliveryState } from './control/delivery-gate.js';
import type { RecipientState, Spool } from './spool/spool.js';
import type { Shadowing, ShadowStatus } from './shadow/shadowing.js';

export interface HealthSnapshot {
  appliedVersion: number;
  controllerConnected: boolean;
  delivery: DeliveryState;
  byState: Record<RecipientState, number>;
  total: number;
  oldestAgeSeconds: number;
  routes: RouteQueueHealth[];
  counters: { accepted: number; rejected: number; delivered: number; deferred: number; bounced: number };
  lastDeliveryError: string;
  diskFreeBytes: number;
  uptimeSeconds: number;
  /** Shadow redundancy, when configured. */
  shadow?: ShadowStatus & { counters: Shadowing['counters'] };
}

const NO_ROUTE = '(no route)';

/**
 * The last per-route breakdown of each queue and what it cost: with a large backlog (a million recipients: a
 * second or more of one pass over the queue) it is reused for 20x as long as it took, so health reports every
 * few seconds never keep the event loop busy more than ~5% of the time. A small queue is counted every time.
 */
const lastBreakdown = new WeakMap<Spool, { table: RouteTable; at: number; until: number; routes: RouteQueueHealth[] }>();

/** Queue depth per route match (the route in force now), so `status` can show what waits for which switchover. */
export function queueByRoute(queue: Spool, table: RouteTable, now: number): RouteQueueHealth[] {
  const last = lastBreakdown.get(queue);
  if (last && last.table === table && Date.now() < last.until) {
    const aged = (now - last.at) / 1000;
    return last.routes.map((r) => ({ ...r, oldestAgeSeconds: r.oldestAgeSeconds + aged }));
  }
  const t0 = Date.now();
  const routes = countByRoute(queue, table, now);
  const took = Date.now() - t0;
  lastBreakdown.set(queue, { table, at: now, until: Date.now() + 20 * took, routes });
  return routes;
}

/** The address routes of a table, once per table version (at 100k routes a pass costs more than the health report). */
const addressesOf = new WeakMap<RouteTable, string[]>();
function addressMatches(table: RouteTable): string[] {
  let out = addressesOf.get(table);
  if (!out) addressesOf.set(table, (out = table.routes.filter((r) => r.match.includes('@')).map((r) => r.match.toLowerCase())));
  return out;
}

function countByRoute(queue: Spool, table: RouteTable, now: number): RouteQueueHealth[] {
  // Nothing queued: nothing to break down (and no pass over a table of 100k routes per health report).
  if (queue.stats().total === 0) return [];
  const byMatch = new Map<string, RouteQueueHealth>();
  // Rows are grouped by domain in SQL; only recipients with an address route of their own come one by one.
  const addresses = addressMatches(table);
  for (const row of queue.breakdown(addresses)) {
    // "@domain" looks up like any address of that domain that has no address route of its own.
    const key = row.key.startsWith('@') ? `@${normalizeDomain(row.key.slice(1)) ?? row.key.slice(1)}` : addressKey(row.key);
    const match = table.lookup(key)?.match ?? NO_ROUTE;
    let h = byMatch.get(match);
    if (!h) byMatch.set(match, (h = { match, queued: 0, deferred: 0, held: 0, inFlight: 0, oldestAgeSeconds: 0 }));
    if (row.state === 'inflight') h.inFlight += row.n;
    else h[row.state] += row.n;
    h.oldestAgeSeconds = Math.max(h.oldestAgeSeconds, (now - row.oldest) / 1000);
  }
  return [...byMatch.values()].sort((a, b) => a.match.localeCompare(b.match));
}
