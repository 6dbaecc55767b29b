import { accessSync, constants as fsConstants, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { MxError } from '../../shared/errors.js';
import { migrateInlineBodies } from './migrate-bodies.js';
import { applyShadowSchema } from './shadow-tables.js';

/**
 * Opening the spool's database: the integrity check of an existing file, pragmas, schema, recovery at start.
 * A message's envelope (messages) and its bytes (message_bodies, and body_parts for a large one) are apart so
 * that the rows claimDue and the views join stay small whatever the message size.
 */

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  arrived_at INTEGER NOT NULL,
  size INTEGER NOT NULL,
  dsn INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS message_bodies (
  msg_id TEXT PRIMARY KEY,
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

export interface OpenOptions {
  /** Open an existing database only (the CLI must never create one in a wrong directory). */
  mustExist?: boolean;
  /** SQLite max_page_count, for tests that simulate a full disk. */
  maxPages?: number;
  /** Skip the integrity check (the CLI's quick look at a running agent's queue). */
  skipCheck?: boolean;
}

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

/** `dataDir`/queue.db opened read-only: no write, no checkpoint, whatever state a crash left it in. */
export function openReadOnly(dataDir: string): Database.Database {
  return new Database(join(dataDir, 'queue.db'), { readonly: true, fileMustExist: true });
}

/**
 * Opens (or creates) `dataDir`/queue.db in WAL mode with synchronous=FULL: every commit has been fsynced when
 * it returns. A damaged or unreadable file is reported on one line and left as it is.
 */
export function openSpoolDb(dataDir: string, opts: OpenOptions = {}): Database.Database {
  const file = join(dataDir, 'queue.db');
  if (!opts.mustExist) mkdirSync(dataDir, { recursive: true });
  let opened: Database.Database | undefined;
  try {
    // Fault suite: the check ran on a read-write connection after journal_mode (which may write the header)
    // and left -wal/-shm files next to a damaged file, and its report spanned several lines. An existing file
    // is now checked read-only first.
    if (!opts.skipCheck && existsSync(file)) checkExisting(file);
    opened = new Database(file, { fileMustExist: opts.mustExist ?? false });
    opened.pragma('journal_mode = WAL');
    opened.pragma('synchronous = FULL');
    opened.pragma('busy_timeout = 5000');
    opened.pragma('foreign_keys = OFF');
    if (opts.maxPages) opened.pragma(`max_page_count = ${opts.maxPages}`);
    opened.exec(SCHEMA);
    migrateInlineBodies(opened);
    applyShadowSchema(opened);
    // Made once with the file: a queue that comes back under another id is a lost disk (shadow takeover).
    opened.prepare("INSERT OR IGNORE INTO shadow_state (key, value) VALUES ('queueId', ?)").run(`q${randomBytes(8).toString('hex')}`);
    return opened;
  } catch (err) {
    opened?.close();
    const why = (err as Error).message.replace(/\s+/g, ' ');
    const damaged = /integrity check failed|not a database|malformed|corrupt/i.test(why);
    const hint = damaged ? '; the file was left as it is: move it aside to start with an empty queue, or salvage it with `sqlite3 queue.db .recover`' : '';
    throw new MxError('QUEUE_OPEN', `cannot open queue database ${file}: ${why}${hint}`);
  }
}

/**
 * A runner for writes that need no fsync of their own (synchronous=NORMAL for their transaction): losing one
 * in a power cut is harmless, and the next FULL commit syncs it with everything before it in the WAL.
 */
export function unsyncedRunner(db: Database.Database): <T>(write: () => T) => T {
  const normal = db.prepare('PRAGMA synchronous = NORMAL');
  const full = db.prepare('PRAGMA synchronous = FULL');
  return (write) => {
    normal.run();
    try {
      return write();
    } finally {
      full.run();
    }
  };
}

/**
 * At start only: rows a crash left in flight become due again (maybe a duplicate delivery, never a loss), and
 * the parts of messages that were still arriving (never committed, never 250) are removed. Returns the rows.
 */
export function recoverAtStart(db: Database.Database, now: number): number {
  return db.transaction(() => {
    db.prepare('DELETE FROM body_parts WHERE msg_id NOT IN (SELECT id FROM messages)').run();
    return db.prepare("UPDATE recipients SET state = 'queued', due_at = ? WHERE state = 'inflight'").run(now).changes;
  })();
}
