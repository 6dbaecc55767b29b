import type { AgentDrainInfo } from '../core/model.js';
import type { AgentInfo } from '../core/registry.js';

type Lookup = (id: string) => AgentInfo | undefined;

/** Which agents have applied `version`, refused it (nack at or above it), or are still pending. */
export function classifyAcks(ids: readonly string[], get: Lookup, version: number): { acked: string[]; pending: string[]; failed: string[] } {
  const acked: string[] = [];
  const pending: string[] = [];
  const failed: string[] = [];
  for (const id of ids) {
    const a = get(id);
    if (a && a.appliedVersion >= version) acked.push(id);
    else if (a?.lastNack && a.lastNack.version >= version) failed.push(`${id}: ${a.lastNack.error}`);
    else pending.push(id);
  }
  return { acked, pending, failed };
}

export function describeAgent(a: AgentInfo | undefined, id: string): string {
  if (!a) return `${id} (removed)`;
  return `${id} (${a.state}, at version ${a.appliedVersion}${a.lastError ? `, ${a.lastError}` : ''})`;
}

/** Allowance for the transit time of a health report when deciding that mail is newer than the release. */
const HEALTH_SLACK_MS = 250;

/**
 * Per agent: is `match` drained since `releasedAt`? Yes when a health report newer than the release shows its queue
 * for the route empty, or its oldest message younger than the release (with continuous traffic the queue is never
 * empty, but what remains went straight to the new target). `delivered` counts from `baseline`.
 */
export function drainState(ids: readonly string[], get: Lookup, matches: ReadonlySet<string>, releasedAt: number, baseline: ReadonlyMap<string, number>): AgentDrainInfo[] {
  return ids.map((id) => {
    const a = get(id);
    const h = a?.health;
    const q = h?.queues.filter((x) => matches.has(x.match)) ?? [];
    const queued = q.reduce((n, x) => n + x.queued + x.deferred + x.held + x.inFlight, 0);
    const oldestMs = Math.max(0, ...q.map((x) => x.oldestAgeSeconds * 1000));
    const fresh = Boolean(a && a.healthAt > releasedAt);
    const drained = fresh && (queued === 0 || a!.healthAt - oldestMs - HEALTH_SLACK_MS > releasedAt);
    const now = h?.counters?.delivered ?? 0;
    const base = baseline.get(id) ?? 0;
    return { agentId: id, queued, delivered: now >= base ? now - base : now, drained };
  });
}
