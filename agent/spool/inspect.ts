import Database from 'better-sqlite3';

/** What the spool holds, counted (for tests, benchmarks and diagnostics). */
export interface SpoolCounts {
  messages: number;
  recipients: number;
  /** Stored parts of large messages, including those of messages still arriving. */
  bodyParts: number;
}

/** SQLite's page limit: `max` at or below `count` means the database cannot grow (a full disk, simulated). */
export interface PageUsage {
  count: number;
  max: number;
}

/** SQLite's default (and largest) max_page_count: no limit. */
const UNLIMITED_PAGES = 1073741823;

/** Lets `db` grow to `max` pages at most (never below its current size); no argument: no limit. */
export function setPageLimit(db: Database.Database, max = UNLIMITED_PAGES): void {
  db.pragma(`max_page_count = ${Math.floor(max)}`);
}

/**
 * Named inspection of the spool's storage, so tests and benchmarks never need SQL: row counts, SQLite's
 * quick_check, and the page limit that simulates a full disk (like the `maxPages` open option).
 */
export class Inspection {
  private readonly stmts;

  constructor(
    private readonly db: Database.Database,
    /** The page limit for the connection that writes, when that is not `db` (the spool's writer thread). */
    private readonly limitWrites?: (max: number) => void,
  ) {
    const count = (table: string) => db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck();
    this.stmts = {
      messages: count('messages'),
      recipients: count('recipients'),
      parts: count('body_parts'),
      messagesOf: db.prepare('SELECT COUNT(*) FROM messages WHERE id = ?').pluck(),
      recipientsOf: db.prepare('SELECT COUNT(*) FROM recipients WHERE msg_id = ?').pluck(),
      partsOf: db.prepare('SELECT COUNT(*) FROM body_parts WHERE msg_id = ?').pluck(),
      orphans: db.prepare('SELECT COUNT(*) FROM recipients r WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.msg_id)').pluck(),
    };
  }

  /** Counts of the whole spool, or of one message's rows (`msgId`). */
  counts(msgId?: string): SpoolCounts {
    const s = this.stmts;
    const n = (all: Database.Statement, of: Database.Statement) => (msgId === undefined ? all.get() : of.get(msgId)) as number;
    return { messages: n(s.messages, s.messagesOf), recipients: n(s.recipients, s.recipientsOf), bodyParts: n(s.parts, s.partsOf) };
  }

  /**
   * Recipients whose message row is gone, counted in one statement (one snapshot): row by row, a delivery
   * committed by the writer thread between two reads would look like one.
   */
  orphanRecipients(): number {
    return this.stmts.orphans.get() as number;
  }

  /** SQLite's quick_check: 'ok', or what it found. */
  quickCheck(): string {
    return String(this.db.pragma('quick_check', { simple: true }));
  }

  /** SQLite's full integrity_check (indexes against tables too): 'ok', or what it found. */
  integrityCheck(): string {
    return String(this.db.pragma('integrity_check', { simple: true }));
  }

  pages(): PageUsage {
    return { count: this.db.pragma('page_count', { simple: true }) as number, max: this.db.pragma('max_page_count', { simple: true }) as number };
  }

  /**
   * Takes the database's write lock on a connection of its own and keeps it until the returned function is
   * called: every write (a commit before a 250 too) waits meanwhile, as it would for a very slow disk.
   */
  holdWriteLock(): () => void {
    const holder = new Database(this.db.name, { fileMustExist: true });
    holder.pragma('busy_timeout = 5000');
    holder.exec('BEGIN IMMEDIATE');
    return () => {
      holder.exec('ROLLBACK');
      holder.close();
    };
  }

  /** Lets the database grow to `max` pages at most (never below its current size); no argument: no limit. */
  limitPages(max = UNLIMITED_PAGES): void {
    setPageLimit(this.db, max);
    this.limitWrites?.(max);
  }
}
