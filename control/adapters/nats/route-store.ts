import { EventEmitter } from 'node:events';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV, KvEntry } from '@nats-io/kv';
import { errorMessage, MxError, quoteInput } from '../../../shared/errors.js';
import { ClaimLost, commitVersion, type KeyWrite } from '../../../shared/kv-versions.js';
import type { Logger } from '../../../shared/logger.js';
import { decodeJson, encodeJson, KvFollower } from '../../../shared/nats.js';
import { completeVersion, decodeRouteVersion, encodeRouteKey, matchOfKey, RouteAssembler, routeKey, TABLE_GONE, VERSION_KEY, type RouteVersionValue } from '../../../shared/route-keys.js';
import { normalizeMatch, normalizeRoutes, type Route } from '../../../shared/routes.js';
import { INVALID_ARGUMENT, NOT_FOUND, VERSION_CONFLICT, type AuditRecord, type ImportOptions, type ImportResult, type RouteStoreApi, type RouteStoreEvents, type Snapshot, type WriteOptions } from '../../core/ports.js';
import { diffImport, type RouteChange } from '../../core/route-import.js';
import { CatchUp } from './catch-up.js';
import { unavailable } from './unavailable.js';

/** Where controllers before the key-per-route layout kept the whole table as one value. */
const LEGACY_TABLE_KEY = 'table';
const auditKey = (version: number) => `audit.${String(version).padStart(12, '0')}`;
const byMatch = (a: Route, b: Route) => (a.match < b.match ? -1 : a.match > b.match ? 1 : 0);

/** A version left "writing" this long is abandoned (its writer died): the next writer claims over it and repairs it. */
const ABANDONED_AFTER_MS = 30_000;
/** How long a writer waits for its own watch to bring the version it wrote (a 100k import takes a few seconds). */
const OWN_WRITE_MS = 30_000;

/** What one write changes, computed from the table in force (the cache at the newest done version). */
type Plan = { changes: RouteChange[]; audit: Omit<AuditRecord, 'id' | 'actor' | 'at' | 'version'>; counts?: Omit<ImportResult, 'version' | 'dryRun'> };

/**
 * The routing table in the `<fleet>-routes` bucket, one key per route plus a version key (layout:
 * shared/route-keys.ts). Reads come from a cache assembled by a watch, exactly as agents assemble theirs; a write
 * claims the next version with compare-and-set (a concurrent write by another replica is refused and retried from
 * a fresh read), writes only the routes it changes, marks the version done and waits for its own watch to see it
 * (read-your-writes for the caller). One audit record per version goes to `<fleet>-ops`.
 */
export class NatsRouteStore extends EventEmitter<RouteStoreEvents> implements RouteStoreApi {
  private readonly assembler = new RouteAssembler();
  private snap: Snapshot | undefined;
  private floor = 0;
  private checkingFloor = 0;
  private floorCheck: Promise<void> = Promise.resolve();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly catchUp = new CatchUp(() => this.assembler.version);
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
    this.follower = new KvFollower('routes', async () => routes, '>', (e) => this.accept(e), log, (watching) => {
      if (watching) this.assembler.reset();
    });
  }

  /** Follows the table; resolves once the cache holds the version that was complete at start (before serving). */
  async start(): Promise<void> {
    const e = await this.routes.get(VERSION_KEY);
    this.follower.start();
    const complete = e && e.operation === 'PUT' ? completeVersion(decodeRouteVersion(e)) : 0;
    if (complete && !(await this.catchUp.reached(complete, OWN_WRITE_MS))) this.log.warn({ version: complete }, 'route table not yet read from NATS; serving what the watch has brought so far');
    if (!e) await this.migrateLegacyTable();
  }

  /**
   * A bucket written by an older controller holds the whole table as one value under `table`: its routes become
   * keys, in one version above it (so agents that applied it take the next one as a change), and the value goes.
   */
  private async migrateLegacyTable(): Promise<void> {
    const legacy = await this.routes.get(LEGACY_TABLE_KEY);
    if (!legacy || legacy.operation !== 'PUT') return;
    const old = decodeJson<{ version: number; routes: Route[] }>(legacy);
    if (!Number.isSafeInteger(old.version) || !Array.isArray(old.routes)) return;
    this.floor = Math.max(this.floor, old.version);
    const result = await this.importRoutes(old.routes, { replace: false, actor: 'migration' });
    await this.routes.delete(LEGACY_TABLE_KEY);
    this.log.warn({ from: old.version, version: result.version, routes: old.routes.length }, 'route table moved from the single "table" value to one key per route');
  }

  restart(): void {
    this.follower.restart();
  }

  async stop(): Promise<void> {
    await this.follower.stop();
  }

  snapshot(): Snapshot {
    // Built once per version: at 100k routes a copy per read would cost more than the reads.
    this.snap ??= { version: this.assembler.version, routes: [...this.assembler.routes.values()].sort(byMatch) };
    return this.snap;
  }

  get version(): number {
    return this.assembler.version;
  }

  get(match: string): Route | undefined {
    return this.assembler.routes.get(this.key(match));
  }

  set(route: Route, opts: WriteOptions = {}): Promise<number> {
    let next: Route;
    try {
      next = normalizeRoutes([route])[0]!;
    } catch (err) {
      return Promise.reject(new MxError(INVALID_ARGUMENT, errorMessage(err)));
    }
    return this.one(next.match, opts, 'set', () => next);
  }

  remove(match: string, opts: WriteOptions = {}): Promise<number> {
    return this.keyed(match, (key) =>
      this.one(key, opts, 'remove', (old) => {
        if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}`);
        return null;
      }),
    );
  }

  setHold(match: string, hold: boolean, opts: WriteOptions = {}): Promise<number> {
    return this.keyed(match, (key) =>
      this.one(key, opts, hold ? 'hold' : 'release', (old) => {
        if (!old) throw new MxError(NOT_FOUND, `no route for ${quoteInput(key)}; create it with route set first`);
        const next: Route = { ...old };
        if (hold) next.hold = true;
        else delete next.hold;
        return next;
      }),
    );
  }

  /** Many routes in one version (see ImportOptions); nothing changes on an error. */
  async importRoutes(routes: readonly Route[], opts: ImportOptions): Promise<ImportResult> {
    let counts: Omit<ImportResult, 'version' | 'dryRun'> | undefined;
    const version = await this.write(opts, (table) => {
      const plan = diffImport(table, routes, opts.replace, opts.setHolds);
      counts = { added: plan.added, changed: plan.changed, removed: plan.removed, unchanged: plan.unchanged };
      const what = `${routes.length} routes${opts.replace ? ' (replace)' : ''}: ${plan.added} added, ${plan.changed} changed, ${plan.removed} removed`;
      return { changes: opts.dryRun ? [] : plan.changes, audit: { action: 'import', match: what, old: null, new: null } };
    });
    return { version, ...counts!, dryRun: Boolean(opts.dryRun) };
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
    if (seen <= this.floor || seen <= this.version || seen <= this.checkingFloor) return;
    // Our cache may just be behind another replica's write: only the version key in NATS says whether it is older.
    this.checkingFloor = seen;
    this.floorCheck = this.routes
      .get(VERSION_KEY)
      .then((e) => {
        const version = e && e.operation === 'PUT' ? decodeRouteVersion(e).version : 0;
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
    let update;
    try {
      update = this.assembler.accept(e);
    } catch (err) {
      this.log.error({ error: errorMessage(err), key: e.key, revision: e.revision }, 'unreadable route table entry in NATS; ignored');
      return;
    }
    if (update === TABLE_GONE) {
      // Versions must never go back for the agents: the next write continues above the last one we saw (the floor).
      this.snap = undefined;
      this.log.error('the route table was deleted from NATS; agents keep theirs, the next change starts a new table');
      return;
    }
    if (!update) return;
    const changed = update.version !== this.snap?.version;
    this.floor = Math.max(this.floor, update.version);
    this.snap = undefined;
    if (changed) this.emit('change', { version: update.version });
    this.catchUp.advanced();
  }

  /** A write of one route: `change` gets the route in force (undefined: none) and returns the new one (null: removed). */
  private one(key: string, opts: WriteOptions, action: AuditRecord['action'], change: (old: Route | undefined) => Route | null): Promise<number> {
    return this.write(opts, (table) => {
      const old = table.get(key);
      const next = change(old);
      return { changes: [{ key, old, next, action }], audit: { action, match: key, old: old ?? null, new: next } };
    });
  }

  private write(opts: WriteOptions, plan: (table: ReadonlyMap<string, Route>) => Plan): Promise<number> {
    const run = () => this.writeNow(opts, plan);
    // One write at a time from this process (no point racing ourselves); other replicas are handled by the CAS.
    const result = this.chain.then(run, run);
    this.chain = result.catch(() => undefined);
    return result;
  }

  private async writeNow(opts: WriteOptions, plan: (table: ReadonlyMap<string, Route>) => Plan): Promise<number> {
    await this.floorCheck;
    for (let attempt = 0; ; attempt++) {
      if (this.nc.isClosed() || !this.connected()) throw new MxError('UNAVAILABLE', 'NATS is not connected; the route table cannot be changed now');
      let entry: KvEntry | null;
      try {
        entry = await this.routes.get(VERSION_KEY);
      } catch (err) {
        throw unavailable(err);
      }
      const base = entry && entry.operation === 'PUT' ? decodeRouteVersion(entry) : undefined;
      if (base?.state === 'writing' && Date.now() - base.at < ABANDONED_AFTER_MS) {
        // Another replica is writing: its version comes first.
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const complete = base ? completeVersion(base) : 0;
      // The plan starts from the cache: it must hold the newest done version (another replica may have written it).
      if (complete > this.version && !(await this.catchUp.reached(complete, 3000))) throw new MxError('UNAVAILABLE', `the route table cache is behind version ${complete} in NATS; retry`);
      if (opts.expectedVersion && opts.expectedVersion !== complete) {
        throw new MxError(VERSION_CONFLICT, `the route table is at version ${complete}, not ${opts.expectedVersion}: someone else changed it; re-read and retry`);
      }
      const { changes, audit } = plan(this.assembler.routes);
      if (!changes.length) return this.version;
      const version = Math.max(base?.version ?? 0, this.floor) + 1;
      const writes: KeyWrite[] = changes.map((c) => ({ key: routeKey(c.key), data: encodeRouteKey({ v: version, route: c.next }) }));
      if (base?.state === 'writing') writes.push(...this.repairs(base.version, version, new Set(changes.map((c) => c.key))));
      const at = Date.now();
      const actor = opts.actor || 'unknown';
      const value = (state: RouteVersionValue['state']) => encodeJson({ version, state, complete: state === 'done' ? version : complete, actor, at } satisfies RouteVersionValue);
      try {
        await commitVersion(this.routes, entry, value, writes);
      } catch (err) {
        if (err instanceof ClaimLost && attempt < 20) {
          this.log.debug({ attempt }, 'route table changed concurrently (another controller?); re-reading');
          continue;
        }
        // Claimed but not done: agents keep the version before; the next write completes a new one.
        throw unavailable(err);
      }
      const record: AuditRecord = { id: version, actor, at, ...audit, version };
      await this.ops.put(auditKey(version), encodeJson(record)).catch((err: unknown) => this.log.error({ error: errorMessage(err), version }, 'audit record not written'));
      if (!(await this.catchUp.reached(version, OWN_WRITE_MS))) this.log.warn({ version }, 'route table write not yet seen by our own watch');
      return version;
    }
  }

  /**
   * The keys an abandoned version wrote (its writer died between claim and done), put back as the table in force
   * has them, so they are not part of the version that takes over.
   */
  private repairs(abandoned: number, version: number, written: ReadonlySet<string>): KeyWrite[] {
    const out: KeyWrite[] = [];
    for (const [key, value] of this.assembler.live) {
      const match = matchOfKey(key)!;
      if (value?.v !== abandoned || written.has(match)) continue;
      out.push({ key, data: encodeRouteKey({ v: version, route: this.assembler.routes.get(match) ?? null }) });
    }
    this.log.warn({ abandoned, repaired: out.length }, 'a route table version was left half-written; taking over and putting its routes back');
    return out;
  }
}
