import type { QueueSelection } from '../shared/queue-selection.js';
import { selectionPick } from './queue-select.js';
import type { Spool } from './spool/spool.js';

/**
 * `queue shape`, Postfix's qshape: the selected recipients counted by recipient domain and by how long ago their
 * message arrived, in doubling age buckets, so that a destination that stopped taking mail stands out (its row
 * fills the right-hand columns while the others stay on the left).
 */

/** Upper bounds of the age buckets in minutes, as qshape has them; one more bucket holds everything older. */
export const SHAPE_BUCKETS_MIN = [5, 10, 20, 40, 80, 160, 320, 640, 1280] as const;

export interface ShapeRow {
  domain: string;
  total: number;
  /** Recipients per bucket: under 5 minutes, under 10, ..., under 1280, then 1280 and over. */
  counts: number[];
}

export interface QueueShape {
  bucketsMinutes: number[];
  rows: ShapeRow[];
}

const bucketOf = (ageMs: number) => {
  const i = SHAPE_BUCKETS_MIN.findIndex((max) => ageMs < max * 60_000);
  return i === -1 ? SHAPE_BUCKETS_MIN.length : i;
};

const domainOf = (rcpt: string) => rcpt.slice(rcpt.lastIndexOf('@') + 1).toLowerCase();

/** Adds up shapes (one per agent) into one; rows by total, largest first. */
export function mergeShapes(shapes: readonly QueueShape[]): QueueShape {
  const byDomain = new Map<string, ShapeRow>();
  for (const shape of shapes) {
    for (const row of shape.rows) {
      const sum = byDomain.get(row.domain) ?? { domain: row.domain, total: 0, counts: SHAPE_BUCKETS_MIN.map(() => 0).concat(0) };
      sum.total += row.total;
      row.counts.forEach((n, i) => (sum.counts[i] = (sum.counts[i] ?? 0) + n));
      byDomain.set(row.domain, sum);
    }
  }
  const rows = [...byDomain.values()].sort((a, b) => b.total - a.total || (a.domain < b.domain ? -1 : 1));
  return { bucketsMinutes: [...SHAPE_BUCKETS_MIN], rows };
}

export function queueShape(queue: Spool, sel: QueueSelection, now = Date.now()): QueueShape {
  const pick = selectionPick(sel, now);
  const rows = new Map<string, ShapeRow>();
  for (const r of queue.allRecipients()) {
    if (!pick(r)) continue;
    const domain = domainOf(r.rcpt);
    const row = rows.get(domain) ?? { domain, total: 0, counts: SHAPE_BUCKETS_MIN.map(() => 0).concat(0) };
    row.total++;
    row.counts[bucketOf(now - r.arrivedAt)]!++;
    rows.set(domain, row);
  }
  return mergeShapes([{ bucketsMinutes: [...SHAPE_BUCKETS_MIN], rows: [...rows.values()] }]);
}
