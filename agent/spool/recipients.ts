import type Database from 'better-sqlite3';
import type { Bodies } from './bodies.js';
import { unsyncedRunner } from './open.js';
import { CLAIMED_COLUMNS, RCPT_COLUMNS, type ClaimedRecipient, type HoldKind, type OutcomeRecord, type RecipientRow } from './types.js';

/** Selects recipient rows for a bulk change (hold, release, retry). */
export type RowPick = (row: RecipientRow) => boolean;

/**
 * The recipients table: one row per recipient of a queued message. Claiming due rows, delivery outcomes, and
 * the bulk changes (hold, release, retry). Dequeue order is by next attempt through the partial index on due_at
 * (due_at is NULL for in-flight and held rows), so taking the next batch costs the same at any queue size.
 */
export class Recipients {
  private readonly stmts;
  private readonly unsynced;

  constructor(
    private readonly db: Database.Database,
    private readonly bodies: Bodies,
  ) {
    this.unsynced = unsyncedRunner(db);
    this.stmts = {
      insert: db.prepare("INSERT INTO recipients (msg_id, rcpt, state, due_at) VALUES (?, ?, 'queued', ?)"),
      due: db.prepare(`SELECT ${CLAIMED_COLUMNS} FROM recipients r JOIN messages m ON m.id = r.msg_id WHERE r.due_at IS NOT NULL AND r.due_at <= ? ORDER BY r.due_at LIMIT ?`),
      claimIds: db.prepare("UPDATE recipients SET state = 'inflight', due_at = NULL WHERE id IN (SELECT value FROM json_each(?))"),
      delete: db.prepare('DELETE FROM recipients WHERE id = ?'),
      deleteOf: db.prepare('DELETE FROM recipients WHERE msg_id = ?'),
      defer: db.prepare("UPDATE recipients SET state = 'deferred', attempts = attempts + 1, due_at = ?, last_reply = ?, route = ? WHERE id = ?"),
      hold: db.prepare("UPDATE recipients SET state = 'held', due_at = NULL, last_reply = ?, route = ?, hold_kind = ?, hold_since = ? WHERE id = ?"),
      release: db.prepare(
        "UPDATE recipients SET state = 'queued', due_at = ?, hold_kind = NULL, held_ms = held_ms + (? - hold_since), hold_since = NULL WHERE id = ?",
      ),
      retryAll: db.prepare('UPDATE recipients SET due_at = ? WHERE due_at > ?'),
      retryOne: db.prepare('UPDATE recipients SET due_at = ? WHERE id = ? AND due_at IS NOT NULL'),
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
  applyOutcomes(results: readonly OutcomeRecord[], now: number): void {
    for (const { row, route, outcome } of results) {
      switch (outcome.kind) {
        case 'delivered':
        case 'bounced':
          this.stmts.delete.run(row.id);
          this.bodies.deleteIfDone(row.msgId);
          break;
        case 'deferred':
          this.stmts.defer.run(outcome.dueAt, outcome.reply, route, row.id);
          break;
        case 'held':
          this.stmts.hold.run(outcome.reply, route, outcome.holdKind, now, row.id);
          break;
      }
    }
  }

  /** Releases held recipients chosen by `pick`; they become due at once and their hold time stops counting. */
  releaseWhere(pick: RowPick, now: number): number {
    return this.change("r.state = 'held'", [], pick, (r) => this.stmts.release.run(now, now, r.id));
  }

  /** Puts waiting (queued/deferred) recipients chosen by `pick` on hold. */
  holdWhere(pick: RowPick, kind: HoldKind, reply: string, now: number): number {
    return this.change('r.due_at IS NOT NULL', [], pick, (r) => this.stmts.hold.run(reply, r.route, kind, now, r.id));
  }

  /** Makes deferred recipients (all, or those chosen by `pick`) due now; all of them in one statement. */
  retryWhere(pick: RowPick | undefined, now: number): number {
    if (!pick) return this.stmts.retryAll.run(now, now).changes;
    return this.change('r.due_at > ?', [now], pick, (r) => this.stmts.retryOne.run(now, r.id));
  }

  /** Operator removal of a whole message with its recipients; true when there was one. */
  removeMessage(msgId: string): boolean {
    return this.db.transaction(() => {
      this.stmts.deleteOf.run(msgId);
      return this.bodies.deleteMessage(msgId);
    })();
  }

  /**
   * Applies `apply` in one transaction to the rows of `where` (a fixed SQL condition) that `pick` chooses.
   * Rows are streamed one at a time so a large queue is never held in memory as row objects: only the chosen
   * ids (and routes) are kept. Returns how many were chosen.
   */
  private change(where: string, params: unknown[], pick: RowPick, apply: (row: { id: number; route: string | null }) => void): number {
    const chosen: { id: number; route: string | null }[] = [];
    for (const row of this.db.prepare(`SELECT ${RCPT_COLUMNS} FROM recipients r WHERE ${where}`).iterate(...params) as IterableIterator<RecipientRow>) {
      if (pick(row)) chosen.push({ id: row.id, route: row.route });
    }
    this.db.transaction(() => chosen.forEach(apply))();
    return chosen.length;
  }
}
