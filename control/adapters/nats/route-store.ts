import { EventEmitter } from 'node:events';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV, KvEntry } from '@nats-io/kv';
import { errorMessage, MxError, quoteInput } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { decodeJson, encodeJson, isWrongLastSequence, KvFollower, TABLE_KEY, type TableValue } from '../../../shared/nats.js';
import { CatchUp } from './catch-up.js';
import { unavailable } from './unavailable.js';
import { INVALID_ARGUMENT, NOT_FOUND, VERSION_CONFLICT, type AuditRecord, type ImportOptions, type ImportResult, type RouteStoreApi, type RouteStoreEvents, type Snapshot, type WriteOptions } from '../../core/ports.js';
import { normalizeMatch, normalizeRoutes, RouteTable, type Route } from '../../../shared/routes.js';

const auditKey = (version: number) => `audit.${String(version).padStart(12, '0')}`;
const byMatch = (a: Route, b: Route) => (a.match < b.match ? -1 : a.match > b.match ? 1 : 0);

/**
 * The routing table in the `<fleet>-routes` bucket, key `table` (the whole table, see shared/nats.ts). Reads come
 * from a cache kept by a watch, so every controller replica answers the same once the watch has delivered; each
 * write reads the current value, computes the next table and writes it with compare-and-set on that value's
 * revision (a concurrent write by another replica makes it re-read and recompute), then waits until its own watch
 * has seen the write (read-your-writes for the caller). One audit record per version goes to `<fleet>-ops`.
 */
export class NatsRouteStore extends EventEmitter<RouteStoreEvents> implements RouteStoreApi {
  private current: Snapshot = { version: 0, routes: [] };
  private revision = 0;
  private floor = 0;
  private checkingFloor = 0;
  private floorCheck: Promise<void> = Promise.resolve();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly catchUp = new CatchUp(() => this.revision);
  private readonly follower: KvFollower;

  constructor(
    private readonly nc: NatsConnection,
    /** False while the NATS connection is down (writes are refused rather than buffered with an unknown outcome). */
    private readonly connected: () => boolean,
    private readonly routes: KV,
    private readonly ops: KV,
    private readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
    this.follower = new KvFollower('routes', async () => routes, TABLE_KEY, (e) => this.accept(e), log);
  }

  /** Reads the table once (before serving), then follows it. */
  async start(): Promise<void> {
    const e = await this.routes.get(TABLE_KEY);
    if (e) this.accept(e);
    this.follower.start();
  }

  restart(): void {
    this.follower.restart();
  }

  async stop(): Promise<void> {
    await this.follower.stop();
  }

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

  set(route: Route, opts: WriteOptions = {}): Promise<number> {
    let normalized: Route;
    try {
      normalized = normalizeRoutes([route])[0]!;
    } catch (err) {
      return Promise.reject(new MxError(INVALID_ARGUMENT, errorMessage(err)));
    }
    return this.write(normalized.match, opts, 'set', () => normalized);
  }

  remove(match: string, opts: WriteOptions = {}): Promise<number> {
    return this.keyed(match, (key) =>
      this.write(key, opts, 'remove', (old) => {
        if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}`);
        return null;
      }),
    );
  }

  setHold(match: string, hold: boolean, opts: WriteOptions = {}): Promise<number> {
    return this.keyed(match, (key) =>
      this.write(key, opts, hold ? 'hold' : 'release', (old) => {
        if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}; create it with route set first`);
        const next: Route = { ...old };
        if (hold) next.hold = true;
        else delete next.hold;
        return next;
      }),
    );
  }

  importRoutes(_routes: readonly Route[], _opts: ImportOptions): Promise<ImportResult> {
    return Promise.reject(new MxError('UNSUPPORTED', 'route import is not available on a NATS-mode controller yet'));
  }

  async audit(limit = 100): Promise<AuditRecord[]> {
    try {
      const keys: string[] = [];
      for await (const k of await this.ops.keys('audit.>')) keys.push(k);
      keys.sort().reverse();
      const entries = await Promise.all(keys.slice(0, limit).map((k) => this.ops.get(k)));
      return entries.filter((e): e is KvEntry => e !== null && e.operation === 'PUT').map((e) => decodeJson<AuditRecord>(e));
    } catch (err) {
      throw unavailable(err);
    }
  }

  raiseVersionFloor(seen: number): void {
    if (seen <= this.floor || seen <= this.current.version || seen <= this.checkingFloor) return;
    // Our cache may just be behind another replica's write: only the table in NATS says whether it is older.
    this.checkingFloor = seen;
    this.floorCheck = this.routes
      .get(TABLE_KEY)
      .then((e) => {
        const version = e && e.operation === 'PUT' ? decodeJson<TableValue>(e).version : 0;
        if (seen > version && seen > this.floor) {
          this.floor = seen;
          this.log.error({ agentVersion: seen, tableVersion: version }, 'an agent applied a newer route table than the one in NATS (bucket replaced or restored?); the next change gets a version above it');
        }
      })
      .catch(() => undefined)
      .finally(() => {
        if (this.checkingFloor === seen) this.checkingFloor = 0;
      });
  }

  private keyed(match: string, fn: (key: string) => Promise<number>): Promise<number> {
    let key: string;
    try {
      key = this.key(match);
    } catch (err) {
      return Promise.reject(err);
    }
    return fn(key);
  }

  private key(match: string): string {
    try {
      return normalizeMatch(match).key;
    } catch (err) {
      throw new MxError(INVALID_ARGUMENT, errorMessage(err));
    }
  }

  private accept(e: KvEntry): void {
    this.acceptValue(e.revision, e.operation, e.value);
  }

  /** A table value from the watch (or our own write): newer revisions replace the cache. */
  private acceptValue(revision: number, operation: KvEntry['operation'], value: Uint8Array): void {
    if (revision <= this.revision) return;
    this.revision = revision;
    if (operation !== 'PUT') {
      // Versions must never go back for the agents: the next write continues above the last one we saw.
      this.floor = Math.max(this.floor, this.current.version);
      this.log.error({ op: operation }, 'the route table was deleted from NATS; agents keep theirs, the next change starts a new table');
      this.current = { version: 0, routes: [] };
    } else {
      try {
        const v = JSON.parse(new TextDecoder().decode(value)) as TableValue;
        const table = new RouteTable(v.routes, v.version);
        const changed = v.version !== this.current.version;
        this.current = { version: v.version, routes: table.routes };
        if (changed) this.emit('change', this.current);
      } catch (err) {
        this.log.error({ error: errorMessage(err), revision }, 'unreadable route table in NATS; ignored');
      }
    }
    this.catchUp.advanced();
  }

  private write(key: string, opts: WriteOptions, action: AuditRecord['action'], change: (old: Route | undefined) => Route | null): Promise<number> {
    const run = () => this.writeNow(key, opts, action, change);
    // One write at a time from this process (no point racing ourselves); other replicas are handled by the CAS.
    const result = this.chain.then(run, run);
    this.chain = result.catch(() => undefined);
    return result;
  }

  private async writeNow(key: string, opts: WriteOptions, action: AuditRecord['action'], change: (old: Route | undefined) => Route | null): Promise<number> {
    await this.floorCheck;
    for (let attempt = 0; ; attempt++) {
      if (this.nc.isClosed() || !this.connected()) throw new MxError('UNAVAILABLE', 'NATS is not connected; the route table cannot be changed now');
      let entry: KvEntry | null;
      try {
        entry = await this.routes.get(TABLE_KEY);
      } catch (err) {
        throw unavailable(err);
      }
      const base: TableValue = entry && entry.operation === 'PUT' ? decodeJson<TableValue>(entry) : { version: 0, routes: [] };
      if (opts.expectedVersion && opts.expectedVersion !== base.version) {
        throw new MxError(VERSION_CONFLICT, `the route table is at version ${base.version}, not ${opts.expectedVersion}: someone else changed it; re-read and retry`);
      }
      const old = base.routes.find((r) => r.match === key);
      const next = change(old);
      const routes = base.routes.filter((r) => r.match !== key);
      if (next) routes.push(next);
      routes.sort(byMatch);
      const version = Math.max(base.version, this.floor) + 1;
      try {
        // The table as a whole must stay loadable by agents.
        new RouteTable(routes, version);
      } catch (err) {
        throw new MxError(INVALID_ARGUMENT, errorMessage(err));
      }
      const at = Date.now();
      const actor = opts.actor || 'unknown';
      const value: TableValue = { version, routes, change: { actor, at, action, match: key, old: old ?? null, new: next } };
      const data = encodeJson(value);
      const max = this.nc.info?.max_payload ?? 1024 * 1024;
      if (data.length > max - 1024) throw new MxError(INVALID_ARGUMENT, `the route table would be ${data.length} bytes, above what NATS carries in one message (max_payload ${max})`);
      let revision: number;
      try {
        revision = entry ? await this.routes.update(TABLE_KEY, data, entry.revision) : await this.routes.create(TABLE_KEY, data);
      } catch (err) {
        if (isWrongLastSequence(err) && attempt < 20) {
          this.log.debug({ attempt }, 'route table changed concurrently (another controller?); re-reading');
          continue;
        }
        throw unavailable(err);
      }
      const audit: AuditRecord = { id: version, actor, at, action, match: key, old: old ?? null, new: next, version };
      await this.ops.put(auditKey(version), encodeJson(audit)).catch((err: unknown) => this.log.error({ error: errorMessage(err), version }, 'audit record not written'));
      if (!(await this.catchUp.reached(revision, 2000)) && revision > this.revision) {
        // The watch is behind (reconnecting): serve our own write until it catches up.
        this.acceptValue(revision, 'PUT', data);
      }
      return version;
    }
  }
}
