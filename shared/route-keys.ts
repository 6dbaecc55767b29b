import type { KvEntry } from '@nats-io/kv';
import { decodeVersion, VERSION_KEY, type VersionValue } from './kv-versions.js';
import { decodeJson } from './nats.js';
import type { RouteDelta } from './route-delta.js';
import type { Route } from './routes.js';

/**
 * The routing table in NATS (bucket `<fleet>-routes`), one key per route so that no value nears the server's max
 * payload at any table size and one change writes one small value:
 * - `r.<base64url(match)>`: {v, route}, the route as of table version v; `route: null` is a removal at v (kept as
 *   a tombstone, so that a reader can tell which version removed it).
 * - `version`: {version, state, complete}, claimed, written and marked done as shared/kv-versions.ts describes;
 *   `complete` is the newest done version (while a version is being written it is the one before it).
 * A route belongs to table version V when its key's latest value has v <= V: a reader that has seen "done V"
 * applies exactly those, so agents and controllers never apply half of a write.
 */
export { VERSION_KEY };

export interface RouteVersionValue extends VersionValue {
  /** The newest version whose keys are all written (= version once done). */
  complete: number;
}

export interface RouteKeyValue {
  v: number;
  route: Route | null;
}

const PREFIX = 'r.';

/** base64url keeps every match (addresses with `+`, `=`, dots) a single valid KV key token. */
export function routeKey(match: string): string {
  return PREFIX + Buffer.from(match, 'utf8').toString('base64url');
}

export function matchOfKey(key: string): string | undefined {
  return key.startsWith(PREFIX) ? Buffer.from(key.slice(PREFIX.length), 'base64url').toString('utf8') : undefined;
}

export function encodeRouteKey(value: RouteKeyValue): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

function decodeRouteKey(e: KvEntry): RouteKeyValue | null {
  if (e.operation !== 'PUT') return null;
  const v = decodeJson<Partial<RouteKeyValue>>(e);
  if (!Number.isSafeInteger(v.v) || (v.route !== null && v.route?.match !== matchOfKey(e.key))) throw new Error('not a route value ({v, route} with the key\'s match)');
  return v as RouteKeyValue;
}

export function decodeRouteVersion(e: KvEntry): RouteVersionValue {
  return decodeVersion<RouteVersionValue>(e, 'route table ({version, state, complete})', (v) => Number.isSafeInteger(v.complete));
}

/** The version every reader may rely on: the newest one done. */
export const completeVersion = (v: RouteVersionValue): number => (v.state === 'done' ? v.version : v.complete);

/** The version key was deleted or purged (the bucket was emptied or restored): there is no table in NATS now. */
export const TABLE_GONE = 'gone';

/**
 * Follows the entries of the routes bucket in watch order and turns them into whole versions. Every key's latest
 * value is kept (`live`); at "done V" the routes of V are applied: the first time after a (re)started watch as a
 * snapshot (the replay brought every live key), later as a delta of the keys written since the version before.
 */
export class RouteAssembler {
  /** The table at `version` (the last done version applied). */
  readonly routes = new Map<string, Route>();
  version = 0;
  /** Latest value of every key seen since the watch (re)started; null: deleted. */
  readonly live = new Map<string, RouteKeyValue | null>();
  private dirty = new Set<string>();
  private replayed = false;

  /** A new watch replays the bucket: what it brings replaces everything. */
  reset(): void {
    this.live.clear();
    this.dirty = new Set();
    this.replayed = false;
  }

  /** The update that makes a version whole, TABLE_GONE, or undefined. Throws on a bad value (nothing taken from it). */
  accept(e: KvEntry): RouteDelta | typeof TABLE_GONE | undefined {
    if (e.key !== VERSION_KEY) {
      if (matchOfKey(e.key) === undefined) return undefined;
      const value = decodeRouteKey(e);
      this.live.set(e.key, value);
      this.dirty.add(e.key);
      return undefined;
    }
    if (e.operation !== 'PUT') {
      // Whatever comes next is a new lineage: take it whole.
      this.replayed = false;
      this.version = 0;
      this.routes.clear();
      return TABLE_GONE;
    }
    const v = decodeRouteVersion(e);
    if (v.state !== 'done') return undefined;
    if (!this.replayed) {
      this.replayed = true;
      return this.snapshot(v.version);
    }
    return this.advance(v.version);
  }

  private snapshot(version: number): RouteDelta {
    this.routes.clear();
    this.dirty = new Set();
    for (const [key, value] of this.live) {
      if (value && value.v > version) this.dirty.add(key);
      else if (value?.route) this.routes.set(value.route.match, value.route);
    }
    this.version = version;
    return { version, baseVersion: 0, snapshot: true, upserts: [...this.routes.values()], removals: [] };
  }

  private advance(version: number): RouteDelta {
    const baseVersion = this.version;
    const upserts: Route[] = [];
    const removals: string[] = [];
    for (const key of this.dirty) {
      const value = this.live.get(key);
      // A key of a version after this one (its writer claimed it since): it waits for that version.
      if (value && value.v > version) continue;
      this.dirty.delete(key);
      const match = value?.route?.match ?? matchOfKey(key)!;
      if (value?.route) {
        this.routes.set(match, value.route);
        upserts.push(value.route);
      } else if (this.routes.delete(match)) removals.push(match);
    }
    this.version = version;
    return { version, baseVersion, snapshot: false, upserts, removals };
  }
}
