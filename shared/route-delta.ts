import type { Route } from './routes.js';

/**
 * A change of the routing table from `baseVersion` to `version` (Envoy's incremental xDS in spirit): the routes
 * that are new or different, and the matches that are gone. A snapshot (`snapshot: true`, base 0) is the whole
 * table: whatever it does not list is gone. Versions are the controller's; an agent applies a delta only on top of
 * exactly `baseVersion`, so a lost or reordered delta can never leave it with a table nobody wrote.
 */
export interface RouteDelta {
  version: number;
  baseVersion: number;
  snapshot: boolean;
  upserts: Route[];
  /** Normalised match keys. */
  removals: string[];
}

/**
 * Whether `delta` applies to a table at `version`. A delta lists the latest state of every route changed after
 * its base (removals as tombstones), so it turns any table of the same lineage at a version from its base up to
 * its own into the table at its version: an agent that applied a version it had not acked yet when its session
 * restarted takes the delta the controller computed from its acked version.
 */
export function followsDelta(delta: RouteDelta, version: number): boolean {
  return delta.snapshot || (delta.baseVersion >= 1 && delta.baseVersion <= version && version <= delta.version);
}

/** Routes and removals per RouteUpdate message: ~2 MB of routes at most, under gRPC's 4 MiB default. */
export const ROUTE_CHUNK = 20_000;

/** One wire message of a delta; the delta is whole at `last`. */
export type RouteChunk = RouteDelta & { last: boolean };

/** A delta as the chunks that carry it (one at least; every chunk repeats the versions, the last is marked). */
export function routeDeltaChunks(d: RouteDelta): RouteChunk[] {
  const out: RouteChunk[] = [];
  const total = d.upserts.length + d.removals.length;
  for (let i = 0; i === 0 || i < total; i += ROUTE_CHUNK) {
    const upserts = d.upserts.slice(i, i + ROUTE_CHUNK);
    const from = Math.max(0, i - d.upserts.length);
    const removals = d.removals.slice(from, from + ROUTE_CHUNK - upserts.length);
    out.push({ version: d.version, baseVersion: d.baseVersion, snapshot: d.snapshot, upserts, removals, last: i + ROUTE_CHUNK >= total });
  }
  return out;
}

/**
 * Collects the chunks of one delta. `add` returns the whole delta at its last chunk, undefined before; a chunk
 * of another delta while one is incomplete is an interruption (the stream was cut and resumed): what was collected
 * is dropped and the error names both versions.
 */
export class RouteChunkAssembler {
  private pending: RouteDelta | undefined;

  add(chunk: RouteChunk): { delta: RouteDelta } | { error: string } | undefined {
    const p = this.pending;
    if (p && (p.version !== chunk.version || p.baseVersion !== chunk.baseVersion || p.snapshot !== chunk.snapshot)) {
      this.pending = undefined;
      return { error: `route update ${chunk.version} interrupted update ${p.version}` };
    }
    const { last, ...part } = chunk;
    if (p) {
      for (const r of part.upserts) p.upserts.push(r);
      for (const m of part.removals) p.removals.push(m);
    } else this.pending = { ...part, upserts: [...part.upserts], removals: [...part.removals] };
    if (!last) return undefined;
    const delta = this.pending!;
    this.pending = undefined;
    return { delta };
  }
}
