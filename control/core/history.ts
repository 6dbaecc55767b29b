import { EventEmitter } from 'node:events';
import type { AgentInfo, Registry } from './registry.js';

/** One point of an agent's recent past: its queue and how fast mail moved since the point before. */
export interface HistoryPoint {
  /** ms epoch of the health report it was taken from. */
  t: number;
  queued: number;
  /** Per second since the previous point (0 for an agent's first point). */
  accepted: number;
  delivered: number;
  deferred: number;
}

export interface HistoryOptions {
  /** At most one point per agent this often (health arrives every few seconds). */
  intervalMs: number;
  /** How far back points are kept. */
  spanMs: number;
}

const DEFAULTS: HistoryOptions = { intervalMs: 5_000, spanMs: 3_600_000 };

interface Series {
  points: HistoryPoint[];
  counters: { accepted: number; delivered: number; deferred: number };
}

/**
 * The dashboard's charts: per agent, queue depth and accepted/delivered/deferred rates over the last hour, taken
 * from the health reports the registry sees. A bounded ring per agent (span / interval points), in memory: the
 * page shows it again after a reload; a controller restart starts it afresh (Prometheus keeps the long view).
 */
export class FleetHistory extends EventEmitter<{ point: [string, HistoryPoint] }> {
  private readonly series = new Map<string, Series>();
  private readonly capacity: number;
  private readonly o: HistoryOptions;

  constructor(
    private readonly registry: Registry,
    options: Partial<HistoryOptions> = {},
  ) {
    super();
    // One listener per open dashboard event stream.
    this.setMaxListeners(0);
    this.o = { ...DEFAULTS, ...options };
    this.capacity = Math.max(1, Math.ceil(this.o.spanMs / this.o.intervalMs));
  }

  start(): void {
    this.registry.on('agent', this.onAgent);
    this.registry.on('removed', this.onRemoved);
  }

  stop(): void {
    this.registry.off('agent', this.onAgent);
    this.registry.off('removed', this.onRemoved);
  }

  /** Every agent's points, oldest first. */
  snapshot(): Record<string, HistoryPoint[]> {
    return Object.fromEntries([...this.series].map(([id, s]) => [id, [...s.points]]));
  }

  private readonly onRemoved = (id: string) => void this.series.delete(id);

  private readonly onAgent = (a: AgentInfo) => {
    const h = a.health;
    if (!h || a.state !== 'connected' || !a.healthAt) return;
    const s = this.series.get(a.id);
    const prev = s?.points.at(-1);
    if (prev && a.healthAt - prev.t < this.o.intervalMs) return;
    const now = { accepted: h.counters?.accepted ?? 0, delivered: h.counters?.delivered ?? 0, deferred: h.counters?.deferred ?? 0 };
    const seconds = prev ? (a.healthAt - prev.t) / 1000 : 0;
    // Counters restart at 0 with the agent: then everything counted so far is new.
    const rate = (k: keyof Series['counters']) => (prev && s ? (now[k] >= s.counters[k] ? now[k] - s.counters[k] : now[k]) / seconds : 0);
    const point: HistoryPoint = { t: a.healthAt, queued: h.totalQueued, accepted: rate('accepted'), delivered: rate('delivered'), deferred: rate('deferred') };
    const series = s ?? { points: [], counters: now };
    series.counters = now;
    series.points.push(point);
    if (series.points.length > this.capacity) series.points.shift();
    this.series.set(a.id, series);
    this.emit('point', a.id, point);
  };
}
