import { addressKey, normalizeDomain } from '../shared/address.js';
import type { RouteTable } from '../shared/routes.js';
import type { RouteQueueHealth } from '../shared/wire.js';
import type { DeliveryState } from './control/delivery-gate.js';
import type { RecipientState, Spool } from './spool/spool.js';
import type { BreakdownRow, GroupCount } from './spool/views.js';
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
 * A queue up to this many recipients is counted per route in one pass whenever health is asked; a larger one in
 * slices of this many recipient ids with the event loop free between them. One pass over a million recipients
 * took ~2 s of the event loop (bench queue-scale: a /metrics scrape answered after 2.2 s, and every SMTP session
 * stood still meanwhile).
 */
const SLICE_IDS = 20_000;

/** The last per-route count of a queue's recipients (absolute arrivals, so it ages by itself), and until when it stands. */
interface Counted {
  addressRoutes: readonly string[];
  rows: BreakdownRow[];
  until: number;
}

/** The address routes of a table, once per table version (at 100k routes a pass costs more than the health report). */
const addressesOf = new WeakMap<RouteTable, string[]>();
function addressMatches(table: RouteTable): string[] {
  let out = addressesOf.get(table);
  if (!out) addressesOf.set(table, (out = table.routes.filter((r) => r.match.includes('@')).map((r) => r.match.toLowerCase())));
  return out;
}

const counted = new WeakMap<Spool, { last?: Counted; scanning?: boolean }>();

/**
 * Queue depth per route match (the route in force now), so `status` can show what waits for which switchover. A
 * count is reused for 20x as long as it took, so health reports every few seconds never keep the event loop busy
 * more than ~5% of the time. A large queue is counted in the background and shown as last counted (empty until
 * the first count is done); its counts are a moment's, not one transaction's: a recipient that changed state
 * while the slices ran may be counted in neither or both.
 */
export function queueByRoute(queue: Spool, table: RouteTable, now: number, total: number, sliceIds = SLICE_IDS): RouteQueueHealth[] {
  // Nothing queued: nothing to break down (and no pass over a table of 100k routes per health report).
  if (total === 0) return [];
  // Rows are grouped by domain in SQL; only recipients with an address route of their own are counted apart.
  const addresses = addressMatches(table);
  let state = counted.get(queue);
  if (!state) counted.set(queue, (state = {}));
  const last = state.last;
  if (last && last.addressRoutes === addresses && Date.now() < last.until) return byRoute(last.rows, table, now);
  if (total <= sliceIds) {
    const t0 = Date.now();
    const rows = queue.breakdown(addresses);
    state.last = { addressRoutes: addresses, rows, until: Date.now() + 20 * (Date.now() - t0) };
    return byRoute(rows, table, now);
  }
  if (!state.scanning) countInSlices(queue, addresses, state, sliceIds);
  return last ? byRoute(last.rows, table, now) : [];
}

function countInSlices(queue: Spool, addresses: readonly string[], state: { last?: Counted; scanning?: boolean }, sliceIds: number): void {
  state.scanning = true;
  const views = queue.breakdownSlices;
  const groups = new Map<string, GroupCount>();
  let busy = 0;
  let after = 0;
  let upTo: number | undefined;
  const slice = () => {
    const t0 = Date.now();
    try {
      upTo ??= views.lastRecipientId();
      const end = Math.min(after + sliceIds, upTo);
      for (const g of views.groupCounts(addresses, after, end)) {
        const k = `${g.state} ${g.key}`;
        const seen = groups.get(k);
        if (seen) groups.set(k, { ...seen, n: seen.n + g.n, first: Math.min(seen.first, g.first) });
        else groups.set(k, g);
      }
      after = end;
      if (after >= upTo) {
        const rows = views.oldestOf([...groups.values()]);
        busy += Date.now() - t0;
        state.last = { addressRoutes: addresses, rows, until: Date.now() + 20 * busy };
        state.scanning = false;
        return;
      }
    } catch {
      // the queue was closed meanwhile (agent stopping): nothing to count any more
      state.scanning = false;
      return;
    }
    busy += Date.now() - t0;
    setImmediate(slice).unref();
  };
  setImmediate(slice).unref();
}

function byRoute(rows: readonly BreakdownRow[], table: RouteTable, now: number): RouteQueueHealth[] {
  const byMatch = new Map<string, RouteQueueHealth>();
  for (const row of rows) {
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
