import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, existsSync, mkdirSync, rmSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import Database from 'better-sqlite3';
import { MxError } from '../shared/errors.js';

export type RecipientState = 'queued' | 'deferred' | 'inflight' | 'held';
/** Why a recipient is held: by its route (released by a table change) or by an operator (released by `queue release`). */
export type HoldKind = 'route' | 'operator';

export interface NewMessage {
  id: string;
  sender: string;
  recipients: readonly string[];
  /**
   * The message, whole or in pieces. A large one (over PART_BYTES) is stored as parts of about PART_BYTES
   * and never held in one buffer (or twice in SQLite's record) on its way in.
   */
  body: Buffer | readonly Buffer[];
  /** Bytes of this message already written with `stagePart` while it arrived; they follow `body`. */
  staged?: number;
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

/** Messages larger than this are stored in parts of about this size (table body_parts). */
export const PART_BYTES = 1024 * 1024;

const EMPTY = Buffer.alloc(0);

export function bodySize(body: Buffer | readonly Buffer[]): number {
  return Buffer.isBuffer(body) ? body.length : body.reduce((n, b) => n + b.length, 0);
}

/** A delivery outcome to write: delivered and bounced recipients leave the queue. */
export interface OutcomeRecord {
  row: RecipientRow;
  route: string | null;
  outcome: Outcome;
}

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
CREATE INDEX IF NOT EXISTS messages_arrived ON messages(arrived_at);
CREATE TABLE IF NOT EXISTS body_parts (
  msg_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (msg_id, seq)
) WITHOUT ROWID;
`;

const RCPT_COLUMNS = `r.id, r.msg_id AS msgId, r.rcpt, r.state, r.attempts, r.due_at AS dueAt, r.last_reply AS lastReply,
  r.route, r.hold_kind AS holdKind, r.hold_since AS holdSince, r.held_ms AS heldMs`;

/**
 * Checks an existing queue file without writing to it: readable and writable by us, a database, and SQLite's
 * quick_check passes. Throws a one-line reason; -wal/-shm files this check created are removed again.
 */
function checkExisting(file: string): void {
  if (statSync(file).isDirectory()) throw new Error('it is a directory, not a file');
  try {
    accessSync(file, fsConstants.R_OK | fsConstants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new Error(`not readable and writable by this user (${code})`);
  }
  const absent = ['-wal', '-shm'].map((s) => file + s).filter((f) => !existsSync(f));
  let db: Database.Database | undefined;
  let ok = false;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const result = String(db.pragma('quick_check', { simple: true }));
    if (result !== 'ok') {
      const problems = result.split('\n').filter((l) => l.trim() && !l.startsWith('***'));
      const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
      throw new Error(`integrity check failed: ${problems[0] ?? result}${more}`);
    }
    ok = true;
  } finally {
    db?.close();
    // A read-only connection cannot remove the -wal/-shm it had to create: leave the directory as we found it.
    if (!ok) for (const f of absent) rmSync(f, { force: true });
  }
}

/**
 * Space the queue keeps free for delivery (claims, outcomes, a WAL cycle of ~1000 pages and its checkpoint):
 * new mail is refused before the disk is this close to full.
 */
export const STORAGE_HEADROOM = 8 * 1024 * 1024;

/** Sortable, unique, Postfix-looking queue id: time in base32 + randomness. */
export function newQueueId(now = Date.now()): string {
  return (now.toString(32) + randomBytes(5).toString('hex')).toUpperCase();
}

export interface QueueOptions {
  /** Open an existing database only (the CLI must never create one in a wrong directory). */
  mustExist?: boolean;
  /** SQLite max_page_count, for tests that simulate a full disk. */
  maxPages?: number;
  /** Free space kept for delivery's own writes (see `hasRoomFor`); default STORAGE_HEADROOM. */
  headroomBytes?: number;
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
  private pendingRecords: { results: readonly OutcomeRecord[]; onError: (err: QueueStorageError) => void }[] = [];
  private flushScheduled = false;
  private readonly stmts;
  private readonly dataDir: string;
  private readonly headroom: number;
  /** Last measured space for new mail, minus what was committed since (re-measured every 250 ms). */
  private room = { at: 0, bytes: 0 };

  constructor(dataDir: string, opts: QueueOptions = {}) {
    const file = join(dataDir, 'queue.db');
    this.dataDir = dataDir;
    this.headroom = opts.headroomBytes ?? STORAGE_HEADROOM;
    if (!opts.mustExist) mkdirSync(dataDir, { recursive: true });
    let opened: Database.Database | undefined;
    try {
      // Fault suite: the check ran on a read-write connection after journal_mode (which may write the header)
      // and left -wal/-shm files next to a damaged file, and its report spanned several lines. An existing file
      // is now checked read-only first; a damaged or unreadable one is reported on one line and left as it is.
      if (!opts.skipCheck && existsSync(file)) checkExisting(file);
      opened = new Database(file, { fileMustExist: opts.mustExist ?? false });
      opened.pragma('journal_mode = WAL');
      opened.pragma('synchronous = FULL');
      opened.pragma('busy_timeout = 5000');
      opened.pragma('foreign_keys = OFF');
      if (opts.maxPages) opened.pragma(`max_page_count = ${opts.maxPages}`);
      opened.exec(SCHEMA);
      this.db = opened;
    } catch (err) {
      opened?.close();
      const why = (err as Error).message.replace(/\s+/g, ' ');
      const damaged = /integrity check failed|not a database|malformed|corrupt/i.test(why);
      const hint = damaged ? '; the file was left as it is: move it aside to start with an empty queue, or salvage it with `sqlite3 queue.db .recover`' : '';
      throw new MxError('QUEUE_OPEN', `cannot open queue database ${file}: ${why}${hint}`);
    }
    const db = this.db;
    this.stmts = {
      insertMsg: db.prepare('INSERT INTO messages (id, sender, arrived_at, size, dsn, body) VALUES (?, ?, ?, ?, ?, ?)'),
      insertRcpt: db.prepare("INSERT INTO recipients (msg_id, rcpt, state, due_at) VALUES (?, ?, 'queued', ?)"),
      due: db.prepare(
        `SELECT ${RCPT_COLUMNS}, m.sender, m.arrived_at AS arrivedAt, m.dsn FROM recipients r JOIN messages m ON m.id = r.msg_id
         WHERE r.due_at IS NOT NULL AND r.due_at <= ? ORDER BY r.due_at LIMIT ?`,
      ),
      claimIds: db.prepare("UPDATE recipients SET state = 'inflight', due_at = NULL WHERE id IN (SELECT value FROM json_each(?))"),
      syncNormal: db.prepare('PRAGMA synchronous = NORMAL'),
      syncFull: db.prepare('PRAGMA synchronous = FULL'),
      body: db.prepare('SELECT body, size FROM messages WHERE id = ?'),
      parts: db.prepare('SELECT data FROM body_parts WHERE msg_id = ? ORDER BY seq').pluck(),
      part: db.prepare('SELECT data FROM body_parts WHERE msg_id = ? AND seq = ?').pluck(),
      insertPart: db.prepare('INSERT INTO body_parts (msg_id, seq, data) VALUES (?, ?, ?)'),
      deleteParts: db.prepare('DELETE FROM body_parts WHERE msg_id = ?'),
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

  /**
   * Whether a message of `size` bytes may still be accepted. Found by the fault suite: when the queue itself
   * filled its disk, every later write failed (claiming due rows, recording outcomes, checkpointing the WAL into
   * the database file), so even with the next hop back nothing could be delivered and no space ever came back.
   * Like Postfix's queue_minfree, new mail is refused (452 4.3.1) while the space left (free disk plus free pages
   * inside the database) is under twice the message (WAL + database) plus a headroom for delivery's writes.
   */
  hasRoomFor(size: number, now = Date.now()): boolean {
    if (now - this.room.at > 250) this.room = { at: now, bytes: this.availableBytes() };
    return this.room.bytes >= 2 * size + this.headroom;
  }

  /** Free disk space under the data directory plus the database's own free pages (reused before it grows). */
  availableBytes(): number {
    let disk = Number.MAX_SAFE_INTEGER;
    try {
      const s = statfsSync(this.dataDir);
      disk = s.bavail * s.bsize;
    } catch {
      // no statfs: rely on SQLITE_FULL at commit
    }
    const pages = this.db.pragma('freelist_count', { simple: true }) as number;
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    return disk + pages * pageSize;
  }

  /** At agent start only: rows a crash left in flight become due again (maybe a duplicate delivery, never a loss). */
  recoverInFlight(now = Date.now()): number {
    // Parts of messages that were still arriving when the previous run stopped (never committed, never 250).
    this.db.prepare('DELETE FROM body_parts WHERE msg_id NOT IN (SELECT id FROM messages)').run();
    return this.stmts.recover.run(now).changes;
  }

  /** Queues a message; resolves with its id once it is on disk. Concurrent calls share one fsync (group commit). */
  commit(msg: NewMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      this.pending.push({ msg, resolve, reject });
      this.scheduleFlush();
    });
  }

  /**
   * Records delivery outcomes in the next group commit, in one transaction with the messages committed in
   * this event-loop turn (one fsync for both instead of one each). `onError` gets the storage error when they
   * could not be written; their rows then stay in flight.
   */
  recordSoon(results: readonly OutcomeRecord[], onError: (err: QueueStorageError) => void): void {
    this.pendingRecords.push({ results, onError });
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flushPending());
  }

  private flushPending(): void {
    this.flushScheduled = false;
    const commits = this.pending;
    this.pending = [];
    const records = this.pendingRecords;
    this.pendingRecords = [];
    const now = Date.now();
    // Together when that works; apart after a failure, so that new mail the disk has no room for does not keep
    // delivered mail from leaving the queue (and the reverse).
    if (commits.length && records.length && this.write(commits, records, now, false)) return;
    if (records.length) this.write([], records, now, true);
    if (commits.length) this.write(commits, [], now, true);
  }

  private write(commits: typeof this.pending, records: typeof this.pendingRecords, now: number, report: boolean): boolean {
    try {
      this.db.transaction(() => {
        for (const { msg } of commits) {
          this.insertMessage(msg, now);
          for (const rcpt of msg.recipients) this.stmts.insertRcpt.run(msg.id, rcpt, now);
        }
        for (const r of records) this.applyOutcomes(r.results, now);
      })();
    } catch (err) {
      if (report) {
        const e = storageError(err);
        for (const p of commits) p.reject(e);
        for (const r of records) r.onError(e);
      }
      return false;
    }
    // Until the next measurement, count what this batch took: once in the WAL, once in the database file.
    this.room.bytes -= 2 * commits.reduce((n, p) => n + bodySize(p.msg.body), 0);
    for (const p of commits) p.resolve(p.msg.id);
    return true;
  }

  /**
   * Takes up to `limit` due recipients and marks them in flight, oldest due first. The claim is committed
   * without its own fsync (synchronous=NORMAL for this one transaction): a claim lost in a power cut leaves
   * the rows due, which is exactly what start-up recovery makes of claimed rows anyway, and the next FULL
   * commit (a message or an outcome) syncs it with everything before it in the WAL.
   */
  claimDue(now: number, limit: number): ClaimedRecipient[] {
    this.stmts.syncNormal.run();
    try {
      return this.db.transaction(() => {
        const rows = this.stmts.due.all(now, limit) as ClaimedRecipient[];
        if (rows.length) this.stmts.claimIds.run(JSON.stringify(rows.map((r) => r.id)));
        return rows.map((r) => ({ ...r, state: 'inflight' as const }));
      })();
    } finally {
      this.stmts.syncFull.run();
    }
  }

  private insertMessage(msg: NewMessage, now: number): void {
    if (msg.staged) {
      const head = Buffer.isBuffer(msg.body) ? msg.body : Buffer.concat(msg.body);
      this.stmts.insertMsg.run(msg.id, msg.sender, now, head.length + msg.staged, msg.dsn ? 1 : 0, head);
      return;
    }
    const size = bodySize(msg.body);
    if (size <= PART_BYTES || Buffer.isBuffer(msg.body)) {
      const body = Buffer.isBuffer(msg.body) ? msg.body : Buffer.concat(msg.body, size);
      this.stmts.insertMsg.run(msg.id, msg.sender, now, size, msg.dsn ? 1 : 0, body);
      return;
    }
    // A large message: an empty body in its row (with the real size) and its bytes in parts of ~PART_BYTES.
    this.stmts.insertMsg.run(msg.id, msg.sender, now, size, msg.dsn ? 1 : 0, EMPTY);
    let seq = 0;
    let group: Buffer[] = [];
    let n = 0;
    for (const piece of msg.body) {
      group.push(piece);
      n += piece.length;
      if (n >= PART_BYTES) {
        this.stmts.insertPart.run(msg.id, seq++, Buffer.concat(group, n));
        group = [];
        n = 0;
      }
    }
    if (n) this.stmts.insertPart.run(msg.id, seq, Buffer.concat(group, n));
  }

  /**
   * The message for delivery: a small one whole; one stored in parts as a stream that reads one part at a
   * time (a new stream per call, so another MX host can be tried), never the whole message in memory. `head`
   * is enough of the message for its header section (bounce notifications).
   */
  forDelivery(msgId: string): { raw: Buffer | (() => Readable); head: Buffer } | undefined {
    const row = this.stmts.body.get(msgId) as { body: Buffer; size: number } | undefined;
    if (!row) return undefined;
    if (row.size <= row.body.length) return { raw: row.body, head: row.body };
    const part = (seq: number) => this.stmts.part.get(msgId, seq) as Buffer | undefined;
    const size = row.size;
    const first = row.body;
    const stream = () => {
      let seq = 0;
      let sent = 0;
      return new Readable({
        read() {
          if (sent === 0 && first.length) {
            sent = first.length;
            return void this.push(first);
          }
          if (sent >= size) return void this.push(null);
          const data = part(seq++);
          // Removed meanwhile: fail the transaction rather than send a truncated message.
          if (!data) return void this.destroy(new Error(`message ${msgId} lost its part ${seq - 1}`));
          sent += data.length;
          this.push(data);
        },
      });
    };
    return { raw: stream, head: Buffer.concat([first, part(0) ?? EMPTY]) };
  }

  /**
   * Writes part `seq` of a message still arriving (ingress, large messages), so it is never whole in memory.
   * No fsync of its own: the message's commit (synchronous=FULL) syncs the WAL with these parts before the 250.
   * Parts of a message that is never committed are removed by `dropParts`, or at the next start.
   */
  stagePart(msgId: string, seq: number, data: Buffer): void {
    this.stmts.syncNormal.run();
    try {
      this.stmts.insertPart.run(msgId, seq, data);
    } catch (err) {
      throw storageError(err);
    } finally {
      this.stmts.syncFull.run();
    }
  }

  dropParts(msgId: string): void {
    this.stmts.deleteParts.run(msgId);
  }

  /** The whole message; one stored in parts is copied into one buffer part by part. */
  body(msgId: string): Buffer | undefined {
    const row = this.stmts.body.get(msgId) as { body: Buffer; size: number } | undefined;
    if (!row || row.size <= row.body.length) return row?.body;
    const out = Buffer.allocUnsafe(row.size);
    let at = row.body.copy(out, 0);
    for (const part of this.stmts.parts.iterate(msgId) as IterableIterator<Buffer>) at += part.copy(out, at);
    return out.subarray(0, at);
  }

  /** Records delivery outcomes in one transaction; delivered and bounced recipients leave the queue. */
  record(results: readonly OutcomeRecord[], now = Date.now()): void {
    this.db.transaction(() => this.applyOutcomes(results, now))();
  }

  private applyOutcomes(results: readonly OutcomeRecord[], now: number): void {
    for (const { row, route, outcome } of results) {
      switch (outcome.kind) {
        case 'delivered':
        case 'bounced':
          this.stmts.deleteRcpt.run(row.id);
          if (this.stmts.deleteMsgIfDone.run(row.msgId, row.msgId).changes) this.stmts.deleteParts.run(row.msgId);
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


  /**
   * Rows of `where` (a fixed SQL condition) that `pick` chooses, streamed one at a time so a large queue is
   * never held in memory as row objects: only the chosen ids (and routes) are kept.
   */
  private chosen(where: string, params: unknown[], pick: (row: RecipientRow) => boolean): { id: number; route: string | null }[] {
    // Outcomes still waiting for the next group commit are written first: a release decided on stale states
    // missed a row whose 'held' outcome was written just after it, and that row stayed held for good.
    if (this.pendingRecords.length) this.flushPending();
    const out: { id: number; route: string | null }[] = [];
    for (const row of this.db.prepare(`SELECT ${RCPT_COLUMNS} FROM recipients r WHERE ${where}`).iterate(...params) as IterableIterator<RecipientRow>) {
      if (pick(row)) out.push({ id: row.id, route: row.route });
    }
    return out;
  }

  /** Releases held recipients chosen by `pick`; they become due at once and their hold time stops counting. */
  releaseWhere(pick: (row: RecipientRow) => boolean, now = Date.now()): number {
    const chosen = this.chosen("r.state = 'held'", [], pick);
    this.db.transaction(() => {
      for (const r of chosen) this.stmts.release.run(now, now, r.id);
    })();
    return chosen.length;
  }

  /** Puts waiting (queued/deferred) recipients chosen by `pick` on hold. */
  holdWhere(pick: (row: RecipientRow) => boolean, kind: HoldKind, reply: string, now = Date.now()): number {
    const chosen = this.chosen('r.due_at IS NOT NULL', [], pick);
    this.db.transaction(() => {
      for (const r of chosen) this.stmts.hold.run(reply, r.route, kind, now, r.id);
    })();
    return chosen.length;
  }

  /** Makes deferred recipients (all, or those chosen by `pick`) due now; all of them in one statement. */
  retryWhere(pick?: (row: RecipientRow) => boolean, now = Date.now()): number {
    if (!pick) return this.db.prepare('UPDATE recipients SET due_at = ? WHERE due_at > ?').run(now, now).changes;
    const chosen = this.chosen('r.due_at > ?', [now], pick);
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
      this.stmts.deleteParts.run(msgId);
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

  /**
   * Counts per (domain, state) with the oldest arrival, for per-route health without loading rows: one pass
   * over the recipients only. Addresses listed in `addresses` (lower case; those with a route of their own)
   * are counted apart, keyed by the address; every other row is keyed "@domain". The oldest arrival of a
   * group is that of its first-inserted recipient (rowids only grow), looked up once per group.
   */
  breakdown(addresses: readonly string[] = []): { key: string; state: RecipientState; n: number; oldest: number }[] {
    // The domain follows the last @: almost always the first one (instr, cheap); otherwise rtrim(x, <x without
    // its @s>) leaves x up to its last @.
    const groups = this.db
      .prepare(
        `SELECT CASE WHEN lower(rcpt) IN (SELECT value FROM json_each(?)) THEN lower(rcpt)
                WHEN instr(substr(rcpt, instr(rcpt, '@') + 1), '@') = 0 THEN '@' || lower(substr(rcpt, instr(rcpt, '@') + 1))
                ELSE '@' || lower(substr(rcpt, length(rtrim(rcpt, replace(rcpt, '@', ''))) + 1)) END AS key,
                state, COUNT(*) AS n, MIN(id) AS first
         FROM recipients GROUP BY key, state`,
      )
      .all(JSON.stringify(addresses)) as { key: string; state: RecipientState; n: number; first: number }[];
    const arrival = this.db.prepare('SELECT m.arrived_at FROM recipients r JOIN messages m ON m.id = r.msg_id WHERE r.id = ?').pluck();
    return groups.map((g) => ({ key: g.key, state: g.state, n: g.n, oldest: (arrival.get(g.first) as number | undefined) ?? Date.now() }));
  }

  close(): void {
    // Messages and outcomes still waiting for this turn's group commit are written first.
    if (this.pending.length || this.pendingRecords.length) this.flushPending();
    this.db.close();
  }
}
