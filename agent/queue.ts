import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { MxError } from '../shared/errors.js';

export type RecipientState = 'queued' | 'deferred' | 'inflight' | 'held';
/** Why a recipient is held: by its route (released by a table change) or by an operator (released by `queue release`). */
export type HoldKind = 'route' | 'operator';

export interface NewMessage {
  id: string;
  sender: string;
  recipients: readonly string[];
  body: Buffer;
  /** A delivery status notification we generated (routed to the sender's MX when no route matches). */
  dsn?: boolean;
}

export interface RecipientRow {
  id: number;
  msgId: string;
  rcpt: string;
  state: RecipientState;
  attempts: number;
  dueAt: number | null;
  lastReply: string | null;
  route: string | null;
  holdKind: HoldKind | null;
  holdSince: number | null;
  heldMs: number;
}

export interface MessageRow {
  id: string;
  sender: string;
  arrivedAt: number;
  size: number;
}

/** A recipient claimed for delivery, with what delivery needs to know about its message. */
export interface ClaimedRecipient extends RecipientRow {
  sender: string;
  arrivedAt: number;
  dsn: 0 | 1;
}

export type Outcome =
  | { kind: 'delivered'; reply: string }
  | { kind: 'deferred'; reply: string; dueAt: number }
  | { kind: 'bounced'; reply: string }
  | { kind: 'held'; reply: string; holdKind: HoldKind };

/** Storage trouble the SMTP side must answer with 4xx: FULL -> 452 4.3.1, anything else -> 451 4.3.0. */
export class QueueStorageError extends MxError {
  constructor(
    readonly full: boolean,
    message: string,
  ) {
    super(full ? 'QUEUE_FULL' : 'QUEUE_ERROR', message);
  }
}

function storageError(err: unknown): QueueStorageError {
  const code = (err as { code?: string }).code ?? '';
  const full = code === 'SQLITE_FULL' || /disk|full/i.test(String((err as Error).message));
  return new QueueStorageError(full, `${code || 'error'}: ${(err as Error).message}`);
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  arrived_at INTEGER NOT NULL,
  size INTEGER NOT NULL,
  dsn INTEGER NOT NULL DEFAULT 0,
  body BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipients (
  id INTEGER PRIMARY KEY,
  msg_id TEXT NOT NULL REFERENCES messages(id),
  rcpt TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  due_at INTEGER,
  last_reply TEXT,
  route TEXT,
  hold_kind TEXT,
  hold_since INTEGER,
  held_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS recipients_msg ON recipients(msg_id);
CREATE INDEX IF NOT EXISTS recipients_state ON recipients(state);
`;

const RCPT_COLUMNS = `r.id, r.msg_id AS msgId, r.rcpt, r.state, r.attempts, r.due_at AS dueAt, r.last_reply AS lastReply,
  r.route, r.hold_kind AS holdKind, r.hold_since AS holdSince, r.held_ms AS heldMs`;

/** Sortable, unique, Postfix-looking queue id: time in base32 + randomness. */
export function newQueueId(now = Date.now()): string {
  return (now.toString(32) + randomBytes(5).toString('hex')).toUpperCase();
}

export interface QueueOptions {
  /** Open an existing database only (the CLI must never create one in a wrong directory). */
  mustExist?: boolean;
  /** SQLite max_page_count, for tests that simulate a full disk. */
  maxPages?: number;
  /** Skip the integrity check (the CLI's quick look at a running agent's queue). */
  skipCheck?: boolean;
}

/**
 * The agent's durable queue: the only module that talks SQL. Every commit that precedes an SMTP 250 is
 * made with synchronous=FULL in WAL mode, so it has been fsynced when `commit()` resolves.
 */
export class Queue {
  readonly db: Database.Database;
  private pending: { msg: NewMessage; resolve: (id: string) => void; reject: (e: Error) => void }[] = [];
  private flushScheduled = false;
  private readonly stmts;

  constructor(dataDir: string, opts: QueueOptions = {}) {
    const file = join(dataDir, 'queue.db');
    if (!opts.mustExist) mkdirSync(dataDir, { recursive: true });
    try {
      this.db = new Database(file, { fileMustExist: opts.mustExist ?? false });
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('foreign_keys = OFF');
      if (opts.maxPages) this.db.pragma(`max_page_count = ${opts.maxPages}`);
      const check = opts.skipCheck ? 'ok' : this.db.pragma('quick_check', { simple: true });
      if (check !== 'ok') throw new Error(`integrity check failed: ${String(check)}`);
      this.db.exec(SCHEMA);
    } catch (err) {
      throw new MxError('QUEUE_OPEN', `cannot open queue database ${file}: ${(err as Error).message}`);
    }
    const db = this.db;
    this.stmts = {
      insertMsg: db.prepare('INSERT INTO messages (id, sender, arrived_at, size, dsn, body) VALUES (?, ?, ?, ?, ?, ?)'),
      insertRcpt: db.prepare("INSERT INTO recipients (msg_id, rcpt, state, due_at) VALUES (?, ?, 'queued', ?)"),
      due: db.prepare(
        `SELECT ${RCPT_COLUMNS}, m.sender, m.arrived_at AS arrivedAt, m.dsn FROM recipients r JOIN messages m ON m.id = r.msg_id
         WHERE r.due_at IS NOT NULL AND r.due_at <= ? ORDER BY r.due_at LIMIT ?`,
      ),
      claim: db.prepare("UPDATE recipients SET state = 'inflight', due_at = NULL WHERE id = ?"),
      body: db.prepare('SELECT body FROM messages WHERE id = ?').pluck(),
      deleteRcpt: db.prepare('DELETE FROM recipients WHERE id = ?'),
      deleteMsgIfDone: db.prepare('DELETE FROM messages WHERE id = ? AND NOT EXISTS (SELECT 1 FROM recipients WHERE msg_id = ?)'),
      defer: db.prepare("UPDATE recipients SET state = 'deferred', attempts = attempts + 1, due_at = ?, last_reply = ?, route = ? WHERE id = ?"),
      hold: db.prepare(
        "UPDATE recipients SET state = 'held', due_at = NULL, last_reply = ?, route = ?, hold_kind = ?, hold_since = ? WHERE id = ?",
      ),
      release: db.prepare(
        "UPDATE recipients SET state = 'queued', due_at = ?, hold_kind = NULL, held_ms = held_ms + (? - hold_since), hold_since = NULL WHERE id = ?",
      ),
      recover: db.prepare("UPDATE recipients SET state = 'queued', due_at = ? WHERE state = 'inflight'"),
    };
  }

  /** At agent start only: rows a crash left in flight become due again (maybe a duplicate delivery, never a loss). */
  recoverInFlight(now = Date.now()): number {
    return this.stmts.recover.run(now).changes;
  }

  /** Queues a message; resolves with its id once it is on disk. Concurrent calls share one fsync (group commit). */
  commit(msg: NewMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      this.pending.push({ msg, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flushPending());
      }
    });
  }

  private flushPending(): void {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    const now = Date.now();
    try {
      this.db.transaction(() => {
        for (const { msg } of batch) {
          this.stmts.insertMsg.run(msg.id, msg.sender, now, msg.body.length, msg.dsn ? 1 : 0, msg.body);
          for (const rcpt of msg.recipients) this.stmts.insertRcpt.run(msg.id, rcpt, now);
        }
      })();
    } catch (err) {
      const e = storageError(err);
      for (const p of batch) p.reject(e);
      return;
    }
    for (const p of batch) p.resolve(p.msg.id);
  }

  /** Takes up to `limit` due recipients and marks them in flight, oldest due first. */
  claimDue(now: number, limit: number): ClaimedRecipient[] {
    return this.db.transaction(() => {
      const rows = this.stmts.due.all(now, limit) as ClaimedRecipient[];
      for (const r of rows) this.stmts.claim.run(r.id);
      return rows.map((r) => ({ ...r, state: 'inflight' as const }));
    })();
  }

  body(msgId: string): Buffer | undefined {
    return this.stmts.body.get(msgId) as Buffer | undefined;
  }

  /** Records delivery outcomes in one transaction; delivered and bounced recipients leave the queue. */
  record(results: readonly { row: RecipientRow; route: string | null; outcome: Outcome }[], now = Date.now()): void {
    this.db.transaction(() => {
      for (const { row, route, outcome } of results) {
        switch (outcome.kind) {
          case 'delivered':
          case 'bounced':
            this.stmts.deleteRcpt.run(row.id);
            this.stmts.deleteMsgIfDone.run(row.msgId, row.msgId);
            break;
          case 'deferred':
            this.stmts.defer.run(outcome.dueAt, outcome.reply, route, row.id);
            break;
          case 'held':
            this.stmts.hold.run(outcome.reply, route, outcome.holdKind, now, row.id);
            break;
        }
      }
    })();
  }

  /** Releases held recipients chosen by `pick`; they become due at once and their hold time stops counting. */
  releaseWhere(pick: (row: RecipientRow) => boolean, now = Date.now()): number {
    const held = this.db.prepare(`SELECT ${RCPT_COLUMNS} FROM recipients r WHERE r.state = 'held'`).all() as RecipientRow[];
    const chosen = held.filter(pick);
    this.db.transaction(() => {
      for (const r of chosen) this.stmts.release.run(now, now, r.id);
    })();
    return chosen.length;
  }

  /** Puts waiting (queued/deferred) recipients chosen by `pick` on hold. */
  holdWhere(pick: (row: RecipientRow) => boolean, kind: HoldKind, reply: string, now = Date.now()): number {
    const waiting = this.db.prepare(`SELECT ${RCPT_COLUMNS} FROM recipients r WHERE r.due_at IS NOT NULL`).all() as RecipientRow[];
    const chosen = waiting.filter(pick);
    this.db.transaction(() => {
      for (const r of chosen) this.stmts.hold.run(reply, r.route, kind, now, r.id);
    })();
    return chosen.length;
  }

  /** Makes deferred recipients (all, or those chosen by `pick`) due now. */
  retryWhere(pick: (row: RecipientRow) => boolean, now = Date.now()): number {
    const rows = this.db.prepare(`SELECT ${RCPT_COLUMNS} FROM recipients r WHERE r.due_at > ?`).all(now) as RecipientRow[];
    const chosen = rows.filter(pick);
    const stmt = this.db.prepare('UPDATE recipients SET due_at = ? WHERE id = ? AND due_at IS NOT NULL');
    this.db.transaction(() => {
      for (const r of chosen) stmt.run(now, r.id);
    })();
    return chosen.length;
  }

  /** Operator removal of a whole message. */
  remove(msgId: string): boolean {
    return this.db.transaction(() => {
      this.db.prepare('DELETE FROM recipients WHERE msg_id = ?').run(msgId);
      return this.db.prepare('DELETE FROM messages WHERE id = ?').run(msgId).changes > 0;
    })();
  }

  message(msgId: string): MessageRow | undefined {
    return this.db.prepare('SELECT id, sender, arrived_at AS arrivedAt, size FROM messages WHERE id = ?').get(msgId) as MessageRow | undefined;
  }

  recipientsOf(msgId: string): RecipientRow[] {
    return this.db.prepare(`SELECT ${RCPT_COLUMNS} FROM recipients r WHERE r.msg_id = ? ORDER BY r.id`).all(msgId) as RecipientRow[];
  }

  /** Every recipient still in the queue with its message's envelope, oldest message first. */
  allRecipients(limit = Number.MAX_SAFE_INTEGER): ClaimedRecipient[] {
    return this.db
      .prepare(
        `SELECT ${RCPT_COLUMNS}, m.sender, m.arrived_at AS arrivedAt, m.dsn FROM recipients r JOIN messages m ON m.id = r.msg_id
         ORDER BY m.arrived_at, r.id LIMIT ?`,
      )
      .all(limit) as ClaimedRecipient[];
  }

  /** Counts per state plus the oldest arrival, in one pass over the state index. */
  stats(): { byState: Record<RecipientState, number>; total: number; oldestArrival: number | null } {
    const byState: Record<RecipientState, number> = { queued: 0, deferred: 0, inflight: 0, held: 0 };
    for (const r of this.db.prepare('SELECT state, COUNT(*) AS n FROM recipients GROUP BY state').all() as { state: RecipientState; n: number }[]) {
      byState[r.state] = r.n;
    }
    const oldest = this.db.prepare('SELECT MIN(arrived_at) AS t FROM messages').pluck().get() as number | null;
    const total = Object.values(byState).reduce((a, b) => a + b, 0);
    return { byState, total, oldestArrival: oldest };
  }

  /** Counts per (recipient, state) with the oldest arrival, for per-route health without loading rows. */
  breakdown(): { rcpt: string; state: RecipientState; n: number; oldest: number }[] {
    return this.db
      .prepare(
        `SELECT lower(r.rcpt) AS rcpt, r.state, COUNT(*) AS n, MIN(m.arrived_at) AS oldest
         FROM recipients r JOIN messages m ON m.id = r.msg_id GROUP BY lower(r.rcpt), r.state`,
      )
      .all() as { rcpt: string; state: RecipientState; n: number; oldest: number }[];
  }

  close(): void {
    this.db.close();
  }
}
