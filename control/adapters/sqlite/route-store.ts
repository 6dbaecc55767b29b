import { EventEmitter } from 'node:events';
import { MxError, errorMessage, quoteInput } from '../../../shared/errors.js';
import { normalizeMatch, normalizeRoutes, RouteTable, type Route } from '../../../shared/routes.js';
import { routeFromWire } from '../../../shared/wire.js';
import { INVALID_ARGUMENT, NOT_FOUND, VERSION_CONFLICT, type AuditRecord, type RouteStoreApi, type RouteStoreEvents, type Snapshot, type WriteOptions } from '../../core/ports.js';
import { addMissingColumn, type Db } from './db.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routes (
  match TEXT PRIMARY KEY,
  target TEXT NOT NULL,
  hold INTEGER NOT NULL DEFAULT 0,
  tls TEXT,
  verify TEXT,
  version INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY,
  actor TEXT NOT NULL,
  at INTEGER NOT NULL,
  action TEXT NOT NULL,
  match TEXT NOT NULL,
  old_json TEXT,
  new_json TEXT,
  version INTEGER NOT NULL
);
`;

interface RouteRow {
  match: string;
  target: string;
  hold: number;
  tls: string | null;
  verify: string | null;
}

// A row has the wire's shape (hold 0/1, tls '' or 'required', verify '' or 'probe').
const toRoute = (r: RouteRow): Route => routeFromWire({ match: r.match, target: r.target, hold: Boolean(r.hold), tls: r.tls ?? '', verify: r.verify ?? '' });


function invalid(err: unknown): MxError {
  return new MxError(INVALID_ARGUMENT, errorMessage(err));
}

/**
 * The routing table of record. Every change is one SQLite transaction that bumps the version (kept in `meta`, so
 * it only ever increases, across restarts too) and writes an audit row. Emits 'change' with the new snapshot
 * after the commit.
 */
export class RouteStore extends EventEmitter<RouteStoreEvents> implements RouteStoreApi {
  private current: Snapshot;

  constructor(private readonly db: Db) {
    super();
    // One listener per watch stream and dashboard event stream: no leak however many are open.
    this.setMaxListeners(0);
    db.exec(SCHEMA);
    // A controller.db from before route verification: NULL = none.
    addMissingColumn(db, 'routes', 'verify', 'TEXT');
    this.current = this.load();
  }

  private load(): Snapshot {
    const rows = this.db.prepare('SELECT match, target, hold, tls, verify FROM routes ORDER BY match').all() as RouteRow[];
    return { version: this.readVersion(), routes: rows.map(toRoute) };
  }

  private readVersion(): number {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'version'").get() as { value: number } | undefined;
    return row?.value ?? 0;
  }

  /** The table in force (cached; writes go through this class only). */
  snapshot(): Snapshot {
    return this.current;
  }

  get version(): number {
    return this.current.version;
  }

  get(match: string): Route | undefined {
    const key = this.key(match);
    return this.current.routes.find((r) => r.match === key);
  }

  /** Creates or replaces one route. */
  set(route: Route, opts: WriteOptions = {}): number {
    let normalized: Route;
    try {
      normalized = normalizeRoutes([route])[0]!;
    } catch (err) {
      throw invalid(err);
    }
    return this.write(normalized.match, opts, 'set', () => normalized);
  }

  remove(match: string, opts: WriteOptions = {}): number {
    const key = this.key(match);
    return this.write(key, opts, 'remove', (old) => {
      if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}`);
      return null;
    });
  }

  /** Sets or clears the hold flag of an existing route (the route must exist). */
  setHold(match: string, hold: boolean, opts: WriteOptions = {}): number {
    const key = this.key(match);
    return this.write(key, opts, hold ? 'hold' : 'release', (old) => {
      if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}; create it with route set first`);
      const next: Route = { ...old };
      if (hold) next.hold = true;
      else delete next.hold;
      return next;
    });
  }

  /** Newest audit records first. */
  audit(limit = 100): AuditRecord[] {
    const rows = this.db.prepare('SELECT id, actor, at, action, match, old_json, new_json, version FROM audit ORDER BY id DESC LIMIT ?').all(limit) as {
      id: number;
      actor: string;
      at: number;
      action: AuditRecord['action'];
      match: string;
      old_json: string | null;
      new_json: string | null;
      version: number;
    }[];
    return rows.map((r) => ({
      id: r.id,
      actor: r.actor,
      at: r.at,
      action: r.action,
      match: r.match,
      old: r.old_json ? (JSON.parse(r.old_json) as Route) : null,
      new: r.new_json ? (JSON.parse(r.new_json) as Route) : null,
      version: r.version,
    }));
  }

  /**
   * An agent reported a version above ours (this database was replaced or restored from a backup): make sure the
   * next change gets a version the agents accept. Changes nothing in the table.
   */
  raiseVersionFloor(seen: number): void {
    const floor = (this.db.prepare("SELECT value FROM meta WHERE key = 'floor'").get() as { value: number } | undefined)?.value ?? 0;
    if (seen > floor && seen > this.current.version) {
      this.db.prepare("INSERT INTO meta (key, value) VALUES ('floor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(seen);
    }
  }

  private key(match: string): string {
    try {
      return normalizeMatch(match).key;
    } catch (err) {
      throw invalid(err);
    }
  }

  /** The compare-and-set write: check version, compute the new row from the old one, bump, audit, commit. */
  private write(key: string, opts: WriteOptions, action: AuditRecord['action'], change: (old: Route | undefined) => Route | null): number {
    const tx = this.db.transaction(() => {
      const version = this.readVersion();
      if (opts.expectedVersion && opts.expectedVersion !== version) {
        throw new MxError(VERSION_CONFLICT, `the route table is at version ${version}, not ${opts.expectedVersion}: someone else changed it; re-read and retry`);
      }
      const oldRow = this.db.prepare('SELECT match, target, hold, tls, verify FROM routes WHERE match = ?').get(key) as RouteRow | undefined;
      const old = oldRow ? toRoute(oldRow) : undefined;
      const next = change(old);
      const floor = (this.db.prepare("SELECT value FROM meta WHERE key = 'floor'").get() as { value: number } | undefined)?.value ?? 0;
      const newVersion = Math.max(version, floor) + 1;
      const now = Date.now();
      if (next) {
        this.db
          .prepare(
            `INSERT INTO routes (match, target, hold, tls, verify, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(match) DO UPDATE SET target = excluded.target, hold = excluded.hold, tls = excluded.tls,
               verify = excluded.verify, version = excluded.version, updated_at = excluded.updated_at`,
          )
          .run(key, next.target, next.hold ? 1 : 0, next.tls ?? null, next.verify ?? null, newVersion, now);
      } else {
        this.db.prepare('DELETE FROM routes WHERE match = ?').run(key);
      }
      this.db.prepare("INSERT INTO meta (key, value) VALUES ('version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(newVersion);
      this.db
        .prepare('INSERT INTO audit (actor, at, action, match, old_json, new_json, version) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(opts.actor || 'unknown', now, action, key, old ? JSON.stringify(old) : null, next ? JSON.stringify(next) : null, newVersion);
      return newVersion;
    });
    const version = tx();
    this.current = this.load();
    // The table as a whole must stay loadable by agents (RouteTable re-validates everything).
    new RouteTable(this.current.routes, this.current.version);
    this.emit('change', this.current);
    return version;
  }
}
