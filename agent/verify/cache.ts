import { join } from 'node:path';
import Database from 'better-sqlite3';

/** A probe's answer as remembered: whether the address exists and what the next hop said. */
export interface CachedAnswer {
  exists: boolean;
  reply: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS verify_cache (
  address TEXT PRIMARY KEY,
  exists_ INTEGER NOT NULL,
  reply TEXT NOT NULL,
  expires INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** Expired rows are removed once per this many writes, so a dictionary attack's negatives do not pile up. */
const PRUNE_EVERY = 1000;

/**
 * Postfix's address_verify_map: probe answers per address in `verify.db` beside the queue, positive ones kept
 * long, negative ones short (both configurable), across restarts. Losing a write in a crash only costs a new
 * probe, so writes are not fsynced (WAL, synchronous=NORMAL) and never slow the queue's commits.
 */
export class VerifyCache {
  private readonly db: Database.Database;
  private readonly getRow: Database.Statement<[string, number], { exists_: number; reply: string }>;
  private readonly putRow: Database.Statement<[string, number, string, number]>;
  private writes = 0;

  constructor(
    dataDir: string,
    private readonly ttl: { positiveMs: number; negativeMs: number },
    private readonly now: () => number = Date.now,
  ) {
    this.db = new Database(join(dataDir, 'verify.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    this.getRow = this.db.prepare('SELECT exists_, reply FROM verify_cache WHERE address = ? AND expires > ?');
    this.putRow = this.db.prepare(
      'INSERT INTO verify_cache (address, exists_, reply, expires) VALUES (?, ?, ?, ?) ON CONFLICT(address) DO UPDATE SET exists_ = excluded.exists_, reply = excluded.reply, expires = excluded.expires',
    );
  }

  get(address: string): CachedAnswer | undefined {
    const row = this.getRow.get(address, this.now());
    return row ? { exists: row.exists_ === 1, reply: row.reply } : undefined;
  }

  put(address: string, answer: CachedAnswer): void {
    const now = this.now();
    this.putRow.run(address, answer.exists ? 1 : 0, answer.reply, now + (answer.exists ? this.ttl.positiveMs : this.ttl.negativeMs));
    if (++this.writes % PRUNE_EVERY === 0) this.db.prepare('DELETE FROM verify_cache WHERE expires <= ?').run(now);
  }

  close(): void {
    this.db.close();
  }
}
