import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export type Db = Database.Database;

/**
 * The controller's one SQLite file (routes, audit, registered agents, operations). One handle shared by the
 * modules that own its tables, so a route change and the operation step that caused it commit in one transaction.
 */
export function openControllerDb(dataDir: string): Db {
  mkdirSync(dataDir, { recursive: true });
  const db = new Database(join(dataDir, 'controller.db'));
  db.pragma('journal_mode = WAL');
  // WAL defaults to NORMAL, which can lose the last commits on power loss; a route version must never be reused.
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  return db;
}

/**
 * Adds a column that a newer release introduced to a table an older one created (CREATE IF NOT EXISTS keeps it);
 * true when it was missing.
 */
export function addMissingColumn(db: Db, table: string, column: string, definition: string): boolean {
  const columns = db.prepare(`SELECT name FROM pragma_table_info('${table}')`).all() as { name: string }[];
  if (columns.some((c) => c.name === column)) return false;
  db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${definition}`);
  return true;
}
