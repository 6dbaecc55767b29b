import type Database from 'better-sqlite3';
import { CLAIMED_COLUMNS, RCPT_COLUMNS, type ClaimedRecipient, type MessageRow, type RecipientRow, type RecipientState } from './types.js';

export interface SpoolStats {
  byState: Record<RecipientState, number>;
  total: number;
  oldestArrival: number | null;
}

/** Recipients of one (domain or address, state) group, with the oldest arrival among them. */
export interface BreakdownRow {
  key: string;
  state: RecipientState;
  n: number;
  oldest: number;
}

/** A group's count in a range of recipient ids, with its first-inserted recipient there (the oldest arrival). */
export interface GroupCount {
  key: string;
  state: RecipientState;
  n: number;
  first: number;
}

/** Read-only views of the spool for queue operations, health and metrics; they never write. */
export class Views {
  private readonly stmts;

  constructor(db: Database.Database) {
    this.stmts = {
      message: db.prepare('SELECT id, sender, arrived_at AS arrivedAt, size FROM messages WHERE id = ?'),
      recipientsOf: db.prepare(`SELECT ${RCPT_COLUMNS} FROM recipients r WHERE r.msg_id = ? ORDER BY r.id`),
      all: db.prepare(`SELECT ${CLAIMED_COLUMNS} FROM recipients r JOIN messages m ON m.id = r.msg_id ORDER BY m.arrived_at, r.id LIMIT ?`),
      byState: db.prepare('SELECT state, COUNT(*) AS n FROM recipients GROUP BY state'),
      oldest: db.prepare('SELECT MIN(arrived_at) AS t FROM messages').pluck(),
      // The domain follows the last @: almost always the first one (instr, cheap); otherwise rtrim(x, <x without
      // its @s>) leaves x up to its last @.
      groups: db.prepare(
        `SELECT CASE WHEN lower(rcpt) IN (SELECT value FROM json_each(?)) THEN lower(rcpt)
                WHEN instr(substr(rcpt, instr(rcpt, '@') + 1), '@') = 0 THEN '@' || lower(substr(rcpt, instr(rcpt, '@') + 1))
                ELSE '@' || lower(substr(rcpt, length(rtrim(rcpt, replace(rcpt, '@', ''))) + 1)) END AS key,
                state, COUNT(*) AS n, MIN(id) AS first
         FROM recipients WHERE id > ? AND id <= ? GROUP BY key, state`,
      ),
      lastId: db.prepare('SELECT max(id) FROM recipients').pluck(),
      arrival: db.prepare('SELECT m.arrived_at FROM recipients r JOIN messages m ON m.id = r.msg_id WHERE r.id = ?').pluck(),
    };
  }

  message(msgId: string): MessageRow | undefined {
    return this.stmts.message.get(msgId) as MessageRow | undefined;
  }

  recipientsOf(msgId: string): RecipientRow[] {
    return this.stmts.recipientsOf.all(msgId) as RecipientRow[];
  }

  /** Every recipient still in the queue with its message's envelope, oldest message first. */
  allRecipients(limit = Number.MAX_SAFE_INTEGER): ClaimedRecipient[] {
    return this.stmts.all.all(limit) as ClaimedRecipient[];
  }

  /** Counts per state plus the oldest arrival, in one pass over the state index. */
  stats(): SpoolStats {
    const byState: Record<RecipientState, number> = { queued: 0, deferred: 0, inflight: 0, held: 0 };
    for (const r of this.stmts.byState.all() as { state: RecipientState; n: number }[]) byState[r.state] = r.n;
    const total = Object.values(byState).reduce((a, b) => a + b, 0);
    return { byState, total, oldestArrival: this.stmts.oldest.get() as number | null };
  }

  /**
   * Counts per (domain, state) with the oldest arrival, for per-route health without loading rows: one pass
   * over the recipients only. Addresses listed in `addresses` (lower case; those with a route of their own)
   * are counted apart, keyed by the address; every other row is keyed "@domain". The oldest arrival of a
   * group is that of its first-inserted recipient (rowids only grow), looked up once per group.
   */
  breakdown(addresses: readonly string[] = []): BreakdownRow[] {
    return this.oldestOf(this.groupCounts(addresses, 0, Number.MAX_SAFE_INTEGER));
  }

  /** The groups of breakdown() among the recipients with ids in (after, upTo] (a slice of a large queue). */
  groupCounts(addresses: readonly string[], after: number, upTo: number): GroupCount[] {
    return this.stmts.groups.all(JSON.stringify(addresses), after, upTo) as GroupCount[];
  }

  /** Groups with the arrival of their first recipient (one lookup per group). */
  oldestOf(groups: readonly GroupCount[]): BreakdownRow[] {
    return groups.map((g) => ({ key: g.key, state: g.state, n: g.n, oldest: (this.stmts.arrival.get(g.first) as number | undefined) ?? Date.now() }));
  }

  /** The highest recipient id in the queue (ids only grow), 0 when empty. */
  lastRecipientId(): number {
    return (this.stmts.lastId.get() as number | null) ?? 0;
  }
}
