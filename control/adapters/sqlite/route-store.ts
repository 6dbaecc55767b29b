import { EventEmitter } from 'node:events';
import { MxError, errorMessage, quoteInput } from '../../../shared/errors.js';
import type { RouteDelta } from '../../../shared/route-delta.js';
import { normalizeMatch, normalizeRoutes, type Route } from '../../../shared/routes.js';
import { routeFromWire } from '../../../shared/wire.js';
import {
  INVALID_ARGUMENT,
  NOT_FOUND,
  VERSION_CONFLICT,
  type AuditRecord,
  type ImportOptions,
  type ImportResult,
  type RouteDeltaSource,
  type RouteStoreApi,
  type RouteStoreEvents,
  type Snapshot,
  type WriteOptions,
} from '../../core/ports.js';
import { addMissingColumn, type Db } from './db.js';
import { diffImport, type RouteChange } from '../../core/route-import.js';

// A removed route stays as a row (present = 0, a tombstone) with the version that removed it, so the changes
// after any version are one indexed query (`version > v`) whatever happened in between. Tombstones older than
// `tombstoneVersions` versions are pruned; an agent further behind than that gets the whole table.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routes (
  match TEXT PRIMARY KEY,
  target TEXT NOT NULL,
  hold INTEGER NOT NULL DEFAULT 0,
  tls TEXT,
  verify TEXT,
  version INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  present INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
-- since(v): the rows changed after v, without a scan of the whole table per change.
CREATE INDEX IF NOT EXISTS routes_by_version ON routes (version);
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

/** Tombstones are pruned this often (in versions): the prune is one indexed DELETE, cheap but not free. */
const PRUNE_EVERY = 1000;

export interface RouteStoreOptions {
  /** How many versions a removal stays known for deltas (an agent further behind gets a snapshot). */
  tombstoneVersions?: number;
}

/**
 * The routing table of record. Every change is one SQLite transaction that bumps the version (kept in `meta`, so
 * it only ever increases, across restarts too), writes the changed rows with that version and one audit row per
 * changed route. The table in force is kept in memory (a map, updated per change), so a change costs O(change)
 * whatever the table's size; `snapshot()` is materialised only when asked for. Emits 'change' with the new
 * version after the commit.
 */
export class RouteStore extends EventEmitter<RouteStoreEvents> implements RouteStoreApi, RouteDeltaSource {
  private readonly table = new Map<string, Route>();
  private current = 0;
  private sorted: Snapshot | undefined;
  /** The oldest version a delta can start from (older agents get a snapshot). */
  private deltaFrom = 0;
  private lastPrune = 0;
  private readonly tombstoneVersions: number;
  private readonly stmts;

  constructor(
    private readonly db: Db,
    opts: RouteStoreOptions = {},
  ) {
    super();
    // One listener per watch stream and dashboard event stream: no leak however many are open.
    this.setMaxListeners(0);
    this.tombstoneVersions = opts.tombstoneVersions ?? 100_000;
    db.exec(SCHEMA);
    // A controller.db from before route verification: NULL = none.
    addMissingColumn(db, 'routes', 'verify', 'TEXT');
    // From before tombstones: removed rows were deleted, so no delta can reach back past this version.
    const tombstonesNew = addMissingColumn(db, 'routes', 'present', 'INTEGER NOT NULL DEFAULT 1');
    db.exec('CREATE INDEX IF NOT EXISTS routes_by_version ON routes (version)');
    this.stmts = {
      meta: db.prepare('SELECT value FROM meta WHERE key = ?').pluck(),
      setMeta: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      upsert: db.prepare(
        `INSERT INTO routes (match, target, hold, tls, verify, version, updated_at, present) VALUES (?, ?, ?, ?, ?, ?, ?, 1)
         ON CONFLICT(match) DO UPDATE SET target = excluded.target, hold = excluded.hold, tls = excluded.tls,
           verify = excluded.verify, version = excluded.version, updated_at = excluded.updated_at, present = 1`,
      ),
      tombstone: db.prepare('UPDATE routes SET present = 0, version = ?, updated_at = ? WHERE match = ?'),
      changedSince: db.prepare('SELECT match, target, hold, tls, verify, present FROM routes WHERE version > ?'),
      prune: db.prepare('DELETE FROM routes WHERE present = 0 AND version <= ?'),
      audit: db.prepare('INSERT INTO audit (actor, at, action, match, old_json, new_json, version) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    };
    for (const row of db.prepare('SELECT match, target, hold, tls, verify FROM routes WHERE present = 1').iterate() as IterableIterator<RouteRow>) {
      this.table.set(row.match, toRoute(row));
    }
    this.current = this.readMeta('version');
    if (tombstonesNew) this.stmts.setMeta.run('delta_from', this.current);
    this.deltaFrom = this.readMeta('delta_from');
    this.lastPrune = this.current;
  }

  private readMeta(key: string): number {
    return (this.stmts.meta.get(key) as number | undefined) ?? 0;
  }

  /** The table in force, sorted by match (built on first use after a change). */
  snapshot(): Snapshot {
    this.sorted ??= { version: this.current, routes: [...this.table.values()].sort((a, b) => (a.match < b.match ? -1 : a.match > b.match ? 1 : 0)) };
    return this.sorted;
  }

  get version(): number {
    return this.current;
  }

  get size(): number {
    return this.table.size;
  }

  get(match: string): Route | undefined {
    return this.table.get(this.key(match));
  }

  /** Creates or replaces one route. */
  set(route: Route, opts: WriteOptions = {}): number {
    let normalized: Route;
    try {
      normalized = normalizeRoutes([route])[0]!;
    } catch (err) {
      throw invalid(err);
    }
    return this.writeOne(normalized.match, opts, 'set', () => normalized);
  }

  remove(match: string, opts: WriteOptions = {}): number {
    const key = this.key(match);
    return this.writeOne(key, opts, 'remove', (old) => {
      if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}`);
      return null;
    });
  }

  /** Sets or clears the hold flag of an existing route (the route must exist). */
  setHold(match: string, hold: boolean, opts: WriteOptions = {}): number {
    const key = this.key(match);
    return this.writeOne(key, opts, hold ? 'hold' : 'release', (old) => {
      if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}; create it with route set first`);
      const next: Route = { ...old };
      if (hold) next.hold = true;
      else delete next.hold;
      return next;
    });
  }

  /** Many routes in one version (see ImportOptions); nothing changes on an error. */
  importRoutes(routes: readonly Route[], opts: ImportOptions): ImportResult {
    const plan = diffImport(this.table, routes, opts.replace, opts.setHolds);
    if (opts.expectedVersion && opts.expectedVersion !== this.current) throw this.conflict(opts.expectedVersion);
    const counts = { added: plan.added, changed: plan.changed, removed: plan.removed, unchanged: plan.unchanged };
    if (opts.dryRun || !plan.changes.length) return { version: this.current, ...counts, dryRun: Boolean(opts.dryRun) };
    const version = this.commit(plan.changes, opts);
    return { version, ...counts, dryRun: false };
  }

  since(version: number): RouteDelta {
    // Unknown here (0; newer than this database: restored from a backup; older than the tombstones kept): all of it.
    if (version <= 0 || version > this.current || version < this.deltaFrom) {
      return { version: this.current, baseVersion: 0, snapshot: true, upserts: [...this.table.values()], removals: [] };
    }
    const upserts: Route[] = [];
    const removals: string[] = [];
    if (version < this.current) {
      for (const row of this.stmts.changedSince.iterate(version) as IterableIterator<RouteRow & { present: number }>) {
        if (row.present) upserts.push(toRoute(row));
        else removals.push(row.match);
      }
    }
    return { version: this.current, baseVersion: version, snapshot: false, upserts, removals };
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
    if (seen > this.readMeta('floor') && seen > this.current) this.stmts.setMeta.run('floor', seen);
  }

  private key(match: string): string {
    try {
      return normalizeMatch(match).key;
    } catch (err) {
      throw invalid(err);
    }
  }

  private conflict(expected: number): MxError {
    return new MxError(VERSION_CONFLICT, `the route table is at version ${this.current}, not ${expected}: someone else changed it; re-read and retry`);
  }

  /** The compare-and-set write of one route: check version, compute the new row from the old one, commit. */
  private writeOne(key: string, opts: WriteOptions, action: AuditRecord['action'], change: (old: Route | undefined) => Route | null): number {
    if (opts.expectedVersion && opts.expectedVersion !== this.current) throw this.conflict(opts.expectedVersion);
    const old = this.table.get(key);
    return this.commit([{ key, old, next: change(old), action }], opts);
  }

  /** One transaction at the next version: rows, audit, version; then the map and the listeners. */
  private commit(changes: readonly RouteChange[], opts: WriteOptions): number {
    const s = this.stmts;
    const floor = this.readMeta('floor');
    const version = Math.max(this.current, floor) + 1;
    const now = Date.now();
    const actor = opts.actor || 'unknown';
    this.db.transaction(() => {
      for (const { key, old, next, action } of changes) {
        if (next) s.upsert.run(key, next.target, next.hold ? 1 : 0, next.tls ?? null, next.verify ?? null, version, now);
        else s.tombstone.run(version, now, key);
        s.audit.run(actor, now, action, key, old ? JSON.stringify(old) : null, next ? JSON.stringify(next) : null, version);
      }
      s.setMeta.run('version', version);
      // Versions skipped over the floor were never this database's: no agent's table there is one we know.
      if (floor > this.current) s.setMeta.run('delta_from', version);
    })();
    if (floor > this.current) this.deltaFrom = version;
    for (const { key, next } of changes) {
      if (next) this.table.set(key, next);
      else this.table.delete(key);
    }
    this.current = version;
    this.sorted = undefined;
    this.prune();
    this.emit('change', { version });
    return version;
  }

  private prune(): void {
    if (this.current - this.lastPrune < Math.min(PRUNE_EVERY, this.tombstoneVersions)) return;
    this.lastPrune = this.current;
    const cut = this.current - this.tombstoneVersions;
    if (cut <= this.deltaFrom) return;
    this.db.transaction(() => {
      this.stmts.prune.run(cut);
      this.stmts.setMeta.run('delta_from', cut);
    })();
    this.deltaFrom = cut;
  }
}
