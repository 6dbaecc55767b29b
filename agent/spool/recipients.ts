import type Database from 'better-sqlite3';
import type { BodyWrites } from './bodies.js';
import { unsyncedRunner } from './open.js';
import { CLAIMED_COLUMNS, type ClaimedRecipient, type HoldKind, type OutcomeWrite } from './types.js';

/** Selects recipient rows (with their message's envelope and arrival) for a bulk change. */
export type RowPick = (row: ClaimedRecipient) => boolean;

/**
 * A bulk change of the rows a RowPick chose (see pickIds). `remove` is the operator's delete, the only way a
 * recipient leaves the queue without a delivery or a bounce.
 */
export type BulkChange = { kind: 'release' } | { kind: 'hold'; holdKind: HoldKind; reply: string } | { kind: 'retry' } | { kind: 'remove' };

/** What a bulk change touched: recipient rows, and the messages they belong to. */
export interface Touched {
  recipients: number;
  messages: number;
}

/** The rows each bulk change is for (the writer re-checks that each chosen row can still take it). */
const CANDIDATES: Record<BulkChange['kind'], string> = {
  release: "r.state = 'held'",
  hold: 'r.due_at IS NOT NULL',
  retry: 'r.due_at > @now',
  remove: '1',
};

/** The rows of `ids` a statement ... RETURNING msg_id touched, counted. */
export function touched(rows: readonly { msgId: string }[]): Touched {
  return { recipients: rows.length, messages: new Set(rows.map((r) => r.msgId)).size };
}

const prepared = new WeakMap<Database.Database, Map<string, Database.Statement>>();

/** The statement for `sql` on `db`, prepared at its first use (a hold of the whole fleet prepared one per agent per step). */
function preparedOnce(db: Database.Database, sql: string): Database.Statement {
  let bySql = prepared.get(db);
  if (!bySql) prepared.set(db, (bySql = new Map()));
  let stmt = bySql.get(sql);
  if (!stmt) bySql.set(sql, (stmt = db.prepare(sql)));
  return stmt;
}

/**
 * The ids of the candidates for `kind` that `pick` chooses (pick is a function: it runs on the spool's thread,
 * the writer gets the ids). Rows are streamed one at a time so a large queue is never held in memory as row
 * objects.
 */
export function pickRows(db: Database.Database, kind: BulkChange['kind'], pick: RowPick, now: number, msgId?: string): { id: number; msgId: string }[] {
  const out: { id: number; msgId: string }[] = [];
  // One message's rows come by its index, not by a pass over the whole queue.
  const one = msgId === undefined ? '' : ' AND r.msg_id = @msgId';
  const rows = preparedOnce(db, `SELECT ${CLAIMED_COLUMNS} FROM recipients r JOIN messages m ON m.id = r.msg_id WHERE ${CANDIDATES[kind]}${one}`);
  const params = { ...(kind === 'retry' ? { now } : {}), ...(msgId === undefined ? {} : { msgId }) };
  for (const row of rows.iterate(params) as IterableIterator<ClaimedRecipient>) if (pick(row)) out.push({ id: row.id, msgId: row.msgId });
  return out;
}

/**
 * The recipients table, written in the writer thread: one row per recipient of a queued message. Claiming due
 * rows, delivery outcomes, and the bulk changes (hold, release, retry). Dequeue order is by next attempt through
 * the partial index on due_at (due_at is NULL for in-flight and held rows), so taking the next batch costs the
 * same at any queue size.
 */
export class RecipientWrites {
  private readonly stmts;
  private readonly unsynced;

  constructor(
    private readonly db: Database.Database,
    private readonly bodies: BodyWrites,
  ) {
    this.unsynced = unsyncedRunner(db);
    // Bulk changes take the chosen ids as one JSON array; each re-checks its candidate condition, because the
    // row may have changed (been claimed, say) since it was picked on the other thread.
    const chosen = 'id IN (SELECT value FROM json_each(@ids))';
    this.stmts = {
      insert: db.prepare("INSERT INTO recipients (msg_id, rcpt, state, due_at) VALUES (?, ?, 'queued', ?)"),
      due: db.prepare(`SELECT ${CLAIMED_COLUMNS} FROM recipients r JOIN messages m ON m.id = r.msg_id WHERE r.due_at IS NOT NULL AND r.due_at <= ? ORDER BY r.due_at LIMIT ?`),
      claimIds: db.prepare("UPDATE recipients SET state = 'inflight', due_at = NULL WHERE id IN (SELECT value FROM json_each(?))"),
      delete: db.prepare('DELETE FROM recipients WHERE id = ?'),
      defer: db.prepare("UPDATE recipients SET state = 'deferred', attempts = attempts + 1, due_at = ?, last_reply = ?, route = ? WHERE id = ?"),
      hold: db.prepare("UPDATE recipients SET state = 'held', due_at = NULL, last_reply = ?, route = ?, hold_kind = ?, hold_since = ? WHERE id = ?"),
      holdChosen: db.prepare(
        `UPDATE recipients SET state = 'held', due_at = NULL, last_reply = @reply, hold_kind = @holdKind, hold_since = @now WHERE due_at IS NOT NULL AND ${chosen} RETURNING msg_id AS msgId`,
      ),
      releaseChosen: db.prepare(
        `UPDATE recipients SET state = 'queued', due_at = @now, hold_kind = NULL, held_ms = held_ms + MAX(0, @now - hold_since), hold_since = NULL WHERE state = 'held' AND ${chosen} RETURNING msg_id AS msgId`,
      ),
      retryChosen: db.prepare(`UPDATE recipients SET due_at = @now WHERE due_at IS NOT NULL AND ${chosen} RETURNING msg_id AS msgId`),
      removeChosen: db.prepare(`DELETE FROM recipients WHERE ${chosen} RETURNING msg_id AS msgId`),
      retryAll: db.prepare('UPDATE recipients SET due_at = ? WHERE due_at > ?'),
    };
  }

  /** The rows of a new message, due at once (inside the commit's transaction). */
  insert(msgId: string, rcpts: readonly string[], now: number): void {
    for (const rcpt of rcpts) this.stmts.insert.run(msgId, rcpt, now);
  }

  /**
   * Takes up to `limit` due recipients and marks them in flight, oldest due first. The claim is committed
   * without its own fsync: a claim lost in a power cut leaves the rows due, which is exactly what start-up
   * recovery makes of claimed rows anyway.
   */
  claimDue(now: number, limit: number): ClaimedRecipient[] {
    return this.unsynced(() =>
      this.db.transaction(() => {
        const rows = this.stmts.due.all(now, limit) as ClaimedRecipient[];
        if (rows.length) this.stmts.claimIds.run(JSON.stringify(rows.map((r) => r.id)));
        return rows.map((r) => ({ ...r, state: 'inflight' as const }));
      })(),
    );
  }

  /** Writes delivery outcomes (inside a transaction): delivered and bounced recipients leave the queue. */
  applyOutcomes(results: readonly OutcomeWrite[], now: number): void {
    for (const { id, msgId, route, outcome } of results) {
      switch (outcome.kind) {
        case 'delivered':
        case 'bounced':
          this.stmts.delete.run(id);
          this.bodies.deleteIfDone(msgId);
          break;
        case 'deferred':
          this.stmts.defer.run(outcome.dueAt, outcome.reply, route, id);
          break;
        case 'held':
          this.stmts.hold.run(outcome.reply, route, outcome.holdKind, now, id);
          break;
      }
    }
  }

  /**
   * Applies a bulk change to the rows `ids` (chosen by pickIds) that are still candidates for it, in one
   * statement. Released rows become due at once and their hold time stops counting; retried rows are due now;
   * removed rows go, and with them each message left without recipients. Returns what changed.
   */
  change(change: BulkChange, ids: readonly number[], now: number): Touched {
    const params = { ids: JSON.stringify(ids), now };
    const all = (stmt: Database.Statement, p: object) => stmt.all(p) as { msgId: string }[];
    switch (change.kind) {
      case 'release':
        return touched(all(this.stmts.releaseChosen, params));
      case 'hold':
        return touched(all(this.stmts.holdChosen, { ...params, holdKind: change.holdKind, reply: change.reply }));
      case 'retry':
        return touched(all(this.stmts.retryChosen, params));
      case 'remove':
        return this.db.transaction(() => {
          const rows = all(this.stmts.removeChosen, { ids: params.ids });
          for (const msgId of new Set(rows.map((r) => r.msgId))) this.bodies.deleteIfDone(msgId);
          return touched(rows);
        })();
    }
  }

  /** Makes every deferred recipient due now, in one statement. */
  retryAll(now: number): number {
    return this.stmts.retryAll.run(now, now).changes;
  }

}
