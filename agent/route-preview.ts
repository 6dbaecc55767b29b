import { addressKey } from '../shared/address.js';
import { normalizeMatch, RouteTable, type Route } from '../shared/routes.js';
import type { RouteChange } from '../shared/wire.js';
import type { Spool } from './spool/spool.js';

/**
 * `route set|rm --dry-run` on one agent: the change applied to a copy of the table in force, and every queued
 * recipient looked up in both. A recipient "moves" when its next hop (target, or hold) differs; the table in
 * force and the queue stay as they are.
 */

export interface RouteMove {
  /** The next hop now and after the change: "smtp:[h]:25", "smtp:[h]:25 (held)", or "no route". */
  from: string;
  to: string;
  recipients: number;
}

export interface RoutePreview {
  /** Queued recipients looked at (every state: waiting, deferred, held, in flight). */
  recipients: number;
  /** Of those, how many would change next hop. */
  moved: number;
  /** The moves, largest first. */
  moves: RouteMove[];
}

/** The table `change` would make of `table` (validated like any table: a bad route throws). */
export function changedTable(table: RouteTable, change: RouteChange): RouteTable {
  const key = normalizeMatch('set' in change ? change.set.match : change.remove).key;
  const kept = table.routes.filter((r) => r.match !== key);
  return new RouteTable('set' in change ? [...kept, change.set] : kept, table.version);
}

const hopOf = (r: Route | undefined) => (r ? `${r.target}${r.hold ? ' (held)' : ''}` : 'no route');

export function previewRouteChange(queue: Spool, table: RouteTable, change: RouteChange): RoutePreview {
  const next = changedTable(table, change);
  const moves = new Map<string, RouteMove>();
  let recipients = 0;
  let moved = 0;
  for (const row of queue.allRecipients()) {
    recipients++;
    const address = addressKey(row.rcpt);
    const from = hopOf(table.lookup(address));
    const to = hopOf(next.lookup(address));
    if (from === to) continue;
    moved++;
    const k = `${from}\n${to}`;
    const m = moves.get(k) ?? { from, to, recipients: 0 };
    m.recipients++;
    moves.set(k, m);
  }
  return { recipients, moved, moves: [...moves.values()].sort((a, b) => b.recipients - a.recipients) };
}
