/**
 * Routes and commands as they travel between controller and agents (protobuf over gRPC, the same shapes as JSON in
 * NATS KV), mapped to and from the domain types in one place.
 */
import { Health, QueueSelector, type Command, type RecipientUpdate, type Route as RouteMsg, type RouteUpdate } from '../proto/gen/mxswitch/v1/agent.js';
import { routeDeltaChunks, type RouteChunk, type RouteDelta } from './route-delta.js';
import { parseQueueState, type QueueSelection } from './queue-selection.js';
import type { RecipientDelta } from './recipient-list.js';
import { MxError } from './errors.js';
import type { Route } from './routes.js';

/** A route on the wire: `hold`, `tls` and `verify` always present (`tls` "" = opportunistic, `verify` "" = none). */
export function routeToWire(r: Route): RouteMsg {
  return { match: r.match, target: r.target, hold: r.hold ?? false, tls: r.tls === 'required' ? 'required' : '', verify: r.verify ?? '' };
}

/** A route from the wire (protobuf or JSON; older JSON values may leave out hold, tls and verify). */
export function routeFromWire(r: { match: string; target: string; hold?: boolean | undefined; tls?: string | undefined; verify?: string | undefined }): Route {
  return {
    match: r.match,
    target: r.target,
    ...(r.hold ? { hold: true } : {}),
    ...(r.tls === 'required' ? { tls: 'required' as const } : {}),
    ...(r.verify === 'probe' ? { verify: 'probe' as const } : {}),
  };
}

/** One route's share of an agent's queue, as the agent reports it in its health. */
export interface RouteQueueHealth {
  match: string;
  queued: number;
  deferred: number;
  held: number;
  inFlight: number;
  oldestAgeSeconds: number;
}

/** An agent's health report, as the agent sends it and the controller keeps it. */
export interface HealthReport {
  appliedVersion: number;
  queues: RouteQueueHealth[];
  counters?: { accepted: number; delivered: number; deferred: number; bounced: number; rejected: number } | undefined;
  lastDeliveryError: string;
  diskFreeBytes: number;
  totalQueued: number;
  oldestAgeSeconds: number;
  uptimeSeconds: number;
  delivery?: { open: boolean; reason: string; sinceMs: number } | undefined;
}

export function healthToWire(h: HealthReport): Health {
  return Health.fromPartial(h);
}

/** A queue change an operator selects (queue rm|retry|hold|release): the selection, and whether only to count. */
export interface QueueChange {
  select: QueueSelection;
  dryRun: boolean;
}

/** One route change (`route set` or `route rm`), as a dry run sends it to the agents. */
export type RouteChange = { set: Route } | { remove: string };

/** A command for an agent, decoded. */
export type AgentCommand =
  | { kind: 'flush'; match: string }
  | { kind: 'queueList'; select: QueueSelection; limit: number }
  | { kind: 'shadowList'; limit: number }
  | { kind: 'queueShow'; id: string; body: boolean }
  | { kind: 'queueShape'; select: QueueSelection }
  | { kind: 'routePreview'; change: RouteChange }
  | { kind: 'routeTable' }
  | ({ kind: 'queueRemove' | 'queueRetry' | 'queueHold' | 'queueRelease' } & QueueChange);

/** A selection from the wire, checked (an unknown state names the field). */
function selectionFromWire(s: QueueSelector): QueueChange {
  const select: QueueSelection = {
    ...(s.all ? { all: true } : {}),
    ...(s.id ? { id: s.id } : {}),
    ...(s.match ? { match: s.match } : {}),
    ...(s.state ? { state: parseQueueState(s.state, 'select.state') } : {}),
    // The null sender travels as "<>": "" is "any sender".
    ...(s.sender ? { sender: s.sender === '<>' ? '' : s.sender } : {}),
    ...(s.olderThanMs ? { olderThanMs: s.olderThanMs } : {}),
  };
  return { select, dryRun: s.dryRun };
}

function selectionToWire({ select: s, dryRun }: QueueChange): QueueSelector {
  return { all: s.all ?? false, id: s.id ?? '', match: s.match ?? '', state: s.state ?? '', sender: s.sender === undefined ? '' : s.sender || '<>', olderThanMs: s.olderThanMs ?? 0, dryRun };
}

/** The one-message form older peers read beside the selection: only when it says exactly what the selection says. */
function legacyId({ select: s, dryRun }: QueueChange): string {
  return !dryRun && s.id !== undefined && Object.keys(s).length === 1 ? s.id : '';
}

export function commandFromWire(k: Command['kind']): AgentCommand {
  switch (k?.$case) {
    case 'flush':
      return { kind: 'flush', match: k.value.match };
    case 'queueList': {
      const { select } = k.value.select ? selectionFromWire(k.value.select) : selectionFromWire(QueueSelector.fromPartial({ match: k.value.match, state: k.value.state }));
      return { kind: 'queueList', select, limit: k.value.limit };
    }
    case 'queueShow':
      return { kind: 'queueShow', id: k.value.id, body: k.value.body };
    case 'queueRemove':
      return { kind: 'queueRemove', ...(k.value.select ? selectionFromWire(k.value.select) : { select: { id: k.value.id }, dryRun: false }) };
    case 'queueRetry': {
      const legacy: QueueSelection = k.value.all ? { all: true } : { id: k.value.id };
      return { kind: 'queueRetry', ...(k.value.select ? selectionFromWire(k.value.select) : { select: legacy, dryRun: false }) };
    }
    case 'queueHold':
      return { kind: 'queueHold', ...selectionFromWire(k.value) };
    case 'queueRelease':
      return { kind: 'queueRelease', ...selectionFromWire(k.value) };
    case 'queueShape':
      return { kind: 'queueShape', select: selectionFromWire(k.value).select };
    case 'routePreview':
      if (k.value.set) return { kind: 'routePreview', change: { set: routeFromWire(k.value.set) } };
      if (k.value.remove) return { kind: 'routePreview', change: { remove: k.value.remove } };
      throw new MxError('INVALID_ARGUMENT', 'route preview without a change (set or remove)');
    case 'routeTable':
      return { kind: 'routeTable' };
    case 'shadowList':
      return { kind: 'shadowList', limit: k.value.limit };
    default:
      throw new MxError('UNSUPPORTED', 'command of an unknown kind (is this agent older than its controller?)');
  }
}

export function commandToWire(c: AgentCommand): NonNullable<Command['kind']> {
  switch (c.kind) {
    case 'flush':
      return { $case: 'flush', value: { match: c.match } };
    case 'queueList': {
      const select = selectionToWire({ select: c.select, dryRun: false });
      return { $case: 'queueList', value: { match: select.match, state: select.state, limit: c.limit, select } };
    }
    case 'shadowList':
      return { $case: 'shadowList', value: { limit: c.limit } };
    case 'queueShow':
      return { $case: 'queueShow', value: { id: c.id, body: c.body } };
    case 'queueRemove':
      return { $case: 'queueRemove', value: { id: legacyId(c), select: selectionToWire(c) } };
    case 'queueRetry':
      return { $case: 'queueRetry', value: { id: legacyId(c), all: false, select: selectionToWire(c) } };
    case 'queueHold':
      return { $case: 'queueHold', value: selectionToWire(c) };
    case 'queueRelease':
      return { $case: 'queueRelease', value: selectionToWire(c) };
    case 'queueShape':
      return { $case: 'queueShape', value: selectionToWire({ select: c.select, dryRun: false }) };
    case 'routePreview':
      return { $case: 'routePreview', value: 'set' in c.change ? { set: routeToWire(c.change.set), remove: '' } : { remove: c.change.remove } };
    case 'routeTable':
      return { $case: 'routeTable', value: {} };
  }
}

/** Changes per RecipientUpdate message: ~1 MB of addresses, well under the 4 MiB message limit. */
const RECIPIENT_CHUNK = 20_000;

/** A recipient-list delta as the messages that carry it (one at least, the last marked). */
export function recipientDeltaToWire(d: RecipientDelta): RecipientUpdate[] {
  const out: RecipientUpdate[] = [];
  for (let i = 0; i === 0 || i < d.changes.length; i += RECIPIENT_CHUNK) {
    const changes = d.changes.slice(i, i + RECIPIENT_CHUNK);
    out.push({ version: d.version, baseVersion: d.baseVersion, snapshot: d.snapshot, changes, last: i + RECIPIENT_CHUNK >= d.changes.length });
  }
  return out;
}

export function recipientChunkFromWire(u: RecipientUpdate): RecipientDelta & { last: boolean } {
  return { version: u.version, baseVersion: u.baseVersion, snapshot: u.snapshot, changes: u.changes, last: u.last };
}

/** A route delta as the RouteUpdate messages that carry it (see routeDeltaChunks). */
export function routeDeltaToWire(d: RouteDelta): RouteUpdate[] {
  return routeDeltaChunks(d).map((c) => ({ version: c.version, baseVersion: c.baseVersion, snapshot: c.snapshot, upserts: c.upserts.map(routeToWire), removals: c.removals, last: c.last }));
}

export function routeChunkFromWire(u: RouteUpdate): RouteChunk {
  return { version: u.version, baseVersion: u.baseVersion, snapshot: u.snapshot, upserts: u.upserts.map(routeFromWire), removals: u.removals, last: u.last };
}
