import type Database from 'better-sqlite3';
import { unsyncedRunner } from './open.js';
import type { BodyWrites } from './bodies.js';
import type { RecipientWrites } from './recipients.js';
import type { HoldKind } from './types.js';

/**
 * Shadow redundancy in the queue's own file: the copies this agent keeps for its clients (shadow_copies,
 * shadow_rcpts, keyed by the client's id and queue id; a large copy's body in shadow_parts, under the transfer
 * that staged it: shadow_copies.xfer names the parts that belong to a copy, any others are half a transfer and
 * never adopted), and which of its own messages have no confirmed copy at
 * its peer yet (shadow_unconfirmed). In the same database as the queue, so a takeover moves copies into the
 * queue in one transaction, and a message and its "not yet copied" mark commit with one fsync.
 */
export const SHADOW_SCHEMA = `
CREATE TABLE IF NOT EXISTS shadow_copies (
  origin TEXT NOT NULL,
  id TEXT NOT NULL,
  sender TEXT NOT NULL,
  arrived_at INTEGER NOT NULL,
  dsn INTEGER NOT NULL DEFAULT 0,
  stored_at INTEGER NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY (origin, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shadow_rcpts (
  origin TEXT NOT NULL,
  msg_id TEXT NOT NULL,
  rcpt TEXT NOT NULL,
  held_ms INTEGER NOT NULL DEFAULT 0,
  hold_since INTEGER,
  hold_kind TEXT,
  PRIMARY KEY (origin, msg_id, rcpt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shadow_parts (
  origin TEXT NOT NULL,
  id TEXT NOT NULL,
  xfer INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (origin, id, xfer, seq)
);
CREATE TABLE IF NOT EXISTS shadow_unconfirmed (msg_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shadow_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
`;

/**
 * Columns added to the shadow tables after their first release, for a queue file made before: a column missing
 * from a table is added with its default (the state a copy stored before had: never held).
 */
const SHADOW_COLUMNS_ADDED: readonly { table: string; column: string; definition: string }[] = [
  { table: 'shadow_rcpts', column: 'held_ms', definition: 'INTEGER NOT NULL DEFAULT 0' },
  { table: 'shadow_rcpts', column: 'hold_since', definition: 'INTEGER' },
  { table: 'shadow_rcpts', column: 'hold_kind', definition: 'TEXT' },
  // A large copy: the transfer whose parts (shadow_parts) follow `body`, and the whole size; NULL = `body` is all.
  { table: 'shadow_copies', column: 'xfer', definition: 'INTEGER' },
  { table: 'shadow_copies', column: 'size', definition: 'INTEGER' },
];

/** Creates the shadow tables, or brings those of an older queue file up to this schema. */
export function applyShadowSchema(db: Database.Database): void {
  db.exec(SHADOW_SCHEMA);
  for (const { table, column, definition } of SHADOW_COLUMNS_ADDED) {
    const columns = db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all(table) as string[];
    if (!columns.includes(column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${definition}`);
  }
}

/**
 * One recipient's hold state on the client. Held time does not count toward retry.maxAge, so the peer keeps it
 * with the copy: a copy taken over after a long hold does not expire early.
 */
export interface ShadowHoldRow {
  rcpt: string;
  /** Time held and released again (ms). */
  heldMs: number;
  /** Held now, since then (ms since the epoch); null = not held. */
  holdSince: number | null;
  /** Why it is held now: an operator's hold outlives a takeover; a route's is the adopter's table's to decide. */
  holdKind: HoldKind | null;
}

/** Recipients of one message whose hold state changed on the client, as they are now. */
export interface ShadowHoldNoticeRow {
  id: string;
  holds: readonly ShadowHoldRow[];
}

/** A client's message as its peer stores it (bodies cross the thread boundary as Uint8Array). */
export interface ShadowCopyRow {
  id: string;
  sender: string;
  recipients: readonly string[];
  body: Uint8Array;
  arrivedAt: number;
  dsn: boolean;
  /** The recipients that have been held (the others never were). */
  holds?: readonly ShadowHoldRow[];
  /** A large message: `body` is followed by `parts` parts staged under `xfer` (stageCopyPart), `size` bytes in all. */
  staged?: { xfer: number; parts: number; size: number };
}

/** Recipients that left a client's queue; none listed = the whole message. */
export interface ShadowDiscardRow {
  id: string;
  recipients: readonly string[];
}

/** One client's part of a group commit on its peer. */
export interface ShadowBatchRows {
  origin: string;
  copies: readonly ShadowCopyRow[];
  discards: readonly ShadowDiscardRow[];
  /** Applied after `copies`: a hold notice may follow a copy in the same batch. */
  holds?: readonly ShadowHoldNoticeRow[];
}

/** A shadow copy as `queue ls --shadow` lists it. */
export interface ShadowListing {
  origin: string;
  id: string;
  sender: string;
  arrivedAt: number;
  size: number;
  recipients: string[];
}

/** The shadow tables' writes, in the writer thread (see Writer). */
export class ShadowWrites {
  private readonly stmts;
  private readonly unsynced;

  constructor(
    private readonly db: Database.Database,
    private readonly bodies: BodyWrites,
    private readonly recipients: RecipientWrites,
  ) {
    this.unsynced = unsyncedRunner(db);
    this.stmts = {
      mark: db.prepare('INSERT OR IGNORE INTO shadow_unconfirmed (msg_id) VALUES (?)'),
      confirm: db.prepare('DELETE FROM shadow_unconfirmed WHERE msg_id IN (SELECT value FROM json_each(?))'),
      markAll: db.prepare('INSERT OR IGNORE INTO shadow_unconfirmed (msg_id) SELECT id FROM messages'),
      putCopy: db.prepare('INSERT OR REPLACE INTO shadow_copies (origin, id, sender, arrived_at, dsn, stored_at, body, xfer, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      copyXfer: db.prepare('SELECT xfer FROM shadow_copies WHERE origin = ? AND id = ?').pluck(),
      stagePart: db.prepare('INSERT INTO shadow_parts (origin, id, xfer, seq, data) VALUES (?, ?, ?, ?, ?)'),
      staged: db.prepare('SELECT COUNT(*) AS n, COALESCE(MAX(seq), -1) AS last, COALESCE(SUM(length(data)), 0) AS bytes FROM shadow_parts WHERE origin = ? AND id = ? AND xfer = ?'),
      dropXfer: db.prepare('DELETE FROM shadow_parts WHERE origin = ? AND id = ? AND xfer = ?'),
      // Never the parts of a kept copy: only a transfer's that no copy names.
      dropUnnamed: db.prepare('DELETE FROM shadow_parts WHERE origin = ? AND id = ? AND xfer = ? AND NOT EXISTS (SELECT 1 FROM shadow_copies c WHERE c.origin = ? AND c.id = ? AND c.xfer = ?)'),
      dropStray: db.prepare('DELETE FROM shadow_parts WHERE NOT EXISTS (SELECT 1 FROM shadow_copies c WHERE c.origin = shadow_parts.origin AND c.id = shadow_parts.id AND c.xfer = shadow_parts.xfer)'),
      // Into the queue's own parts inside SQLite: an adopted large message never passes through memory whole.
      adoptParts: db.prepare('INSERT INTO body_parts (msg_id, seq, data) SELECT id, seq, data FROM shadow_parts WHERE origin = ? AND id = ? AND xfer = ? ORDER BY seq'),
      dropOriginParts: db.prepare('DELETE FROM shadow_parts WHERE origin = ?'),
      clearRcpts: db.prepare('DELETE FROM shadow_rcpts WHERE origin = ? AND msg_id = ?'),
      putRcpt: db.prepare('INSERT OR IGNORE INTO shadow_rcpts (origin, msg_id, rcpt, held_ms, hold_since, hold_kind) VALUES (?, ?, ?, ?, ?, ?)'),
      setRcptHold: db.prepare('UPDATE shadow_rcpts SET held_ms = ?, hold_since = ?, hold_kind = ? WHERE origin = ? AND msg_id = ? AND rcpt = ?'),
      dropRcpt: db.prepare('DELETE FROM shadow_rcpts WHERE origin = ? AND msg_id = ? AND rcpt = ?'),
      dropCopyIfDone: db.prepare('DELETE FROM shadow_copies WHERE origin = ? AND id = ? AND NOT EXISTS (SELECT 1 FROM shadow_rcpts WHERE origin = ? AND msg_id = ?)'),
      dropCopy: db.prepare('DELETE FROM shadow_copies WHERE origin = ? AND id = ?'),
      copiesOf: db.prepare('SELECT id, sender, arrived_at AS arrivedAt, dsn, body, xfer, size FROM shadow_copies WHERE origin = ?'),
      rcptsOf: db.prepare('SELECT rcpt, held_ms AS heldMs, hold_since AS holdSince, hold_kind AS holdKind FROM shadow_rcpts WHERE origin = ? AND msg_id = ?'),
      // Right after this.recipients.insert (which knows nothing of holds): the time held at the origin.
      setHeld: db.prepare('UPDATE recipients SET held_ms = ? WHERE msg_id = ? AND rcpt = ?'),
      // An operator's hold at the origin stays one here (queue release frees it), counted from the takeover on.
      holdForOperator: db.prepare("UPDATE recipients SET state = 'held', due_at = NULL, hold_kind = 'operator', hold_since = ?, last_reply = ? WHERE msg_id = ? AND rcpt = ?"),
      dropOriginCopies: db.prepare('DELETE FROM shadow_copies WHERE origin = ?'),
      dropOriginRcpts: db.prepare('DELETE FROM shadow_rcpts WHERE origin = ?'),
      exists: db.prepare('SELECT 1 FROM messages WHERE id = ?').pluck(),
      ownIdsToDrop: db.prepare('SELECT id FROM messages WHERE id NOT IN (SELECT msg_id FROM shadow_unconfirmed)').pluck(),
      recipientIdsOf: db.prepare('SELECT id FROM recipients WHERE msg_id = ?').pluck(),
      forgetGone: db.prepare('DELETE FROM shadow_unconfirmed WHERE msg_id NOT IN (SELECT id FROM messages)'),
      setState: db.prepare('INSERT OR REPLACE INTO shadow_state (key, value) VALUES (?, ?)'),
    };
  }

  /** Messages of ours accepted without a copy at the peer (durable on return: their 250 waits for it). */
  markUnconfirmed(ids: readonly string[]): void {
    this.db.transaction(() => {
      for (const id of ids) this.stmts.mark.run(id);
    })();
  }

  /**
   * The peer confirmed these copies. No fsync of its own: a confirmation lost in a power cut only makes the
   * message go to the peer once more.
   */
  confirm(ids: readonly string[]): void {
    this.unsynced(() => this.stmts.confirm.run(JSON.stringify(ids)));
  }

  /** The peer was replaced: every message of ours goes to the new one. Returns how many wait for a copy. */
  unconfirmAll(): number {
    return this.db.transaction(() => {
      this.stmts.markAll.run();
      this.stmts.forgetGone.run();
      return (this.db.prepare('SELECT COUNT(*) FROM shadow_unconfirmed').pluck().get() as number) ?? 0;
    })();
  }

  /**
   * Part `seq` of a large copy still arriving. No fsync of its own (like the queue's staged parts): the commit
   * of the copy that names its transfer (synchronous=FULL) syncs the WAL with it, before the client's 250.
   */
  stagePart(origin: string, id: string, xfer: number, seq: number, data: Buffer): void {
    this.unsynced(() => this.stmts.stagePart.run(origin, id, xfer, seq, data));
  }

  /** The parts of a transfer whose copy will not come (its stream ended); those of a kept copy stay. */
  dropStaged(origin: string, id: string, xfer: number): void {
    this.stmts.dropUnnamed.run(origin, id, xfer, origin, id, xfer);
  }

  /** At start: parts no copy names (transfers a stop cut short) go. */
  dropStrayParts(): number {
    return this.stmts.dropStray.run().changes;
  }

  /**
   * Clients' copies and discard notices, one durable transaction (synchronous=FULL: fsynced on return). Returns,
   * per batch, the ids of large copies not kept because their parts were not all staged (never half a copy).
   */
  store(batches: readonly ShadowBatchRows[], now: number): string[][] {
    return this.db.transaction(() => batches.map((b) => this.storeOne(b, now)))();
  }

  private storeOne({ origin, copies, discards, holds = [] }: ShadowBatchRows, now: number): string[] {
    const incomplete: string[] = [];
    for (const c of copies) {
      if (c.staged && !this.complete(origin, c.id, c.body.length, c.staged)) {
        incomplete.push(c.id);
        this.stmts.dropUnnamed.run(origin, c.id, c.staged.xfer, origin, c.id, c.staged.xfer);
        continue;
      }
      // A copy sent again replaces the one kept, and the parts of the one kept with it.
      const before = this.stmts.copyXfer.get(origin, c.id) as number | null | undefined;
      this.stmts.putCopy.run(origin, c.id, c.sender, c.arrivedAt, c.dsn ? 1 : 0, now, c.body, c.staged?.xfer ?? null, c.staged?.size ?? null);
      if (before != null && before !== c.staged?.xfer) this.stmts.dropXfer.run(origin, c.id, before);
      // A copy sent again (a re-shadow) replaces the recipients with those still queued, and their hold state.
      this.stmts.clearRcpts.run(origin, c.id);
      const held = new Map((c.holds ?? []).map((h) => [h.rcpt, h]));
      for (const r of c.recipients) this.stmts.putRcpt.run(origin, c.id, r, held.get(r)?.heldMs ?? 0, held.get(r)?.holdSince ?? null, held.get(r)?.holdKind ?? null);
    }
    // A notice for a copy not kept here (never sent, or discarded since) changes nothing.
    for (const n of holds) for (const h of n.holds) this.stmts.setRcptHold.run(h.heldMs, h.holdSince, h.holdKind, origin, n.id, h.rcpt);
    for (const d of discards) {
      const xfer = this.stmts.copyXfer.get(origin, d.id) as number | null | undefined;
      if (!d.recipients.length) {
        this.stmts.clearRcpts.run(origin, d.id);
        this.stmts.dropCopy.run(origin, d.id);
      } else {
        for (const r of d.recipients) this.stmts.dropRcpt.run(origin, d.id, r);
        this.stmts.dropCopyIfDone.run(origin, d.id, origin, d.id);
      }
      // The copy's parts go with it (and stay while it is kept).
      if (xfer != null) this.stmts.dropUnnamed.run(origin, d.id, xfer, origin, d.id, xfer);
    }
    return incomplete;
  }

  /** Exactly parts 0..parts-1 of the transfer are staged, and with `head` they make `size` bytes. */
  private complete(origin: string, id: string, head: number, { xfer, parts, size }: NonNullable<ShadowCopyRow['staged']>): boolean {
    const got = this.stmts.staged.get(origin, id, xfer) as { n: number; last: number; bytes: number };
    return got.n === parts && got.last === parts - 1 && head + got.bytes === size;
  }

  /**
   * Takeover: `origin`'s copies become messages of this queue, due now (the scheduler holds what a held route
   * holds), arrival as at the origin so expiry counts from there, less the time each recipient was held there
   * (a hold still on at the origin counts up to now: it was held until it was lost). A queue id already here (a
   * copy adopted before) is skipped. Returns what was adopted.
   */
  adopt(origin: string, now: number): { messages: number; recipients: number } {
    return this.db.transaction(() => {
      let messages = 0;
      let recipients = 0;
      for (const c of this.stmts.copiesOf.all(origin) as { id: string; sender: string; arrivedAt: number; dsn: number; body: Buffer; xfer: number | null; size: number | null }[]) {
        const holds = this.stmts.rcptsOf.all(origin, c.id) as ShadowHoldRow[];
        const rcpts = holds.map((h) => h.rcpt);
        if (rcpts.length && !this.stmts.exists.get(c.id)) {
          // A large copy becomes a message staged in parts, as if it had arrived here.
          const staged = c.xfer !== null && c.size !== null ? { staged: c.size - c.body.length } : {};
          if (c.xfer !== null) this.stmts.adoptParts.run(origin, c.id, c.xfer);
          this.bodies.insert({ id: c.id, sender: c.sender, recipients: rcpts, body: c.body, arrivedAt: c.arrivedAt, ...(c.dsn ? { dsn: true } : {}), ...staged }, now);
          this.recipients.insert(c.id, rcpts, now);
          for (const h of holds) {
            const held = heldUntil(h, now);
            if (held > 0) this.stmts.setHeld.run(held, c.id, h.rcpt);
            if (h.holdSince !== null && h.holdKind === 'operator') this.stmts.holdForOperator.run(now, `held by operator (on ${origin}, taken over)`, c.id, h.rcpt);
          }
          messages++;
          recipients += rcpts.length;
        }
      }
      this.stmts.dropOriginRcpts.run(origin);
      this.stmts.dropOriginParts.run(origin);
      this.stmts.dropOriginCopies.run(origin);
      return { messages, recipients };
    })();
  }

  /** Copies kept for an agent that is no longer a client here (and was not taken over by us). */
  dropOrigin(origin: string): number {
    return this.db.transaction(() => {
      this.stmts.dropOriginRcpts.run(origin);
      this.stmts.dropOriginParts.run(origin);
      return this.stmts.dropOriginCopies.run(origin).changes;
    })();
  }

  /**
   * This agent was taken over while away: its peer delivers every message it had a confirmed copy of, so those
   * leave this queue; a message without a confirmed copy stays (it is nowhere else). Returns the messages dropped.
   */
  dropTakenOver(version: number, now: number): number {
    return this.db.transaction(() => {
      const ids = this.stmts.ownIdsToDrop.all() as string[];
      for (const id of ids) this.recipients.change({ kind: 'remove' }, this.stmts.recipientIdsOf.all(id) as number[], now);
      // In the same transaction: a restart never drops again what arrived after this takeover.
      this.stmts.setState.run('takenOverVersion', version);
      return ids.length;
    })();
  }
}

/** Time `h` spent held up to `now` (a clock step back at the origin counts as no time, never as negative). */
export function heldUntil(h: Pick<ShadowHoldRow, 'heldMs' | 'holdSince'>, now: number): number {
  return h.heldMs + (h.holdSince === null ? 0 : Math.max(0, now - h.holdSince));
}

/** The shadow tables read on the spool's own thread (never written there). */
export class ShadowViews {
  private readonly stmts;

  constructor(db: Database.Database) {
    this.stmts = {
      unconfirmed: db.prepare('SELECT u.msg_id FROM shadow_unconfirmed u JOIN messages m ON m.id = u.msg_id ORDER BY m.arrived_at LIMIT ?').pluck(),
      unconfirmedCount: db.prepare('SELECT COUNT(*) FROM shadow_unconfirmed u JOIN messages m ON m.id = u.msg_id').pluck(),
      copyCount: db.prepare('SELECT COUNT(*) FROM shadow_copies').pluck(),
      list: db.prepare('SELECT origin, id, sender, arrived_at AS arrivedAt, COALESCE(size, length(body)) AS size FROM shadow_copies ORDER BY arrived_at LIMIT ?'),
      rcpts: db.prepare('SELECT rcpt FROM shadow_rcpts WHERE origin = ? AND msg_id = ? ORDER BY rcpt').pluck(),
      dsn: db.prepare('SELECT dsn FROM messages WHERE id = ?').pluck(),
      state: db.prepare('SELECT value FROM shadow_state WHERE key = ?').pluck(),
      holdStates: db.prepare('SELECT msg_id AS msgId, rcpt, held_ms AS heldMs, hold_since AS holdSince, hold_kind AS holdKind FROM recipients WHERE id IN (SELECT value FROM json_each(?)) ORDER BY msg_id'),
    };
  }

  /** The hold state of these recipient rows of our queue, per message: what a hold notice to the peer carries. */
  holdStates(rowIds: readonly number[]): ShadowHoldNoticeRow[] {
    const byMsg = new Map<string, ShadowHoldRow[]>();
    for (const { msgId, ...h } of this.stmts.holdStates.all(JSON.stringify(rowIds)) as (ShadowHoldRow & { msgId: string })[]) {
      const list = byMsg.get(msgId) ?? [];
      list.push(h);
      byMsg.set(msgId, list);
    }
    return [...byMsg].map(([id, holds]) => ({ id, holds }));
  }

  /** Own messages without a confirmed copy at the peer, oldest first. */
  unconfirmed(limit: number): string[] {
    return this.stmts.unconfirmed.all(limit) as string[];
  }

  unconfirmedCount(): number {
    return this.stmts.unconfirmedCount.get() as number;
  }

  copyCount(): number {
    return this.stmts.copyCount.get() as number;
  }

  /** The identity of this queue file (made with it). */
  queueId(): string {
    return String(this.stmts.state.get('queueId') ?? '');
  }

  /** The takeover of this agent handled last (its assignment version; 0 = none). */
  takenOverVersion(): number {
    return (this.stmts.state.get('takenOverVersion') as number | undefined) ?? 0;
  }

  isDsn(msgId: string): boolean {
    return this.stmts.dsn.get(msgId) === 1;
  }

  list(limit: number): ShadowListing[] {
    return (this.stmts.list.all(limit) as Omit<ShadowListing, 'recipients'>[]).map((r) => ({ ...r, recipients: this.stmts.rcpts.all(r.origin, r.id) as string[] }));
  }
}
