/**
 * Routes and commands as they travel between controller and agents (protobuf over gRPC, the same shapes as JSON in
 * NATS KV), mapped to and from the domain types in one place.
 */
import { Health, type Command, type RecipientUpdate, type Route as RouteMsg } from '../proto/gen/mxswitch/v1/agent.js';
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

/** A command for an agent, decoded. */
export type AgentCommand =
  | { kind: 'flush'; match: string }
  | { kind: 'queueList'; match: string; state: string; limit: number }
  | { kind: 'queueShow'; id: string; body: boolean }
  | { kind: 'queueRemove'; id: string }
  | { kind: 'queueRetry'; id: string; all: boolean };

export function commandFromWire(k: Command['kind']): AgentCommand {
  switch (k?.$case) {
    case 'flush':
      return { kind: 'flush', match: k.value.match };
    case 'queueList':
      return { kind: 'queueList', match: k.value.match, state: k.value.state, limit: k.value.limit };
    case 'queueShow':
      return { kind: 'queueShow', id: k.value.id, body: k.value.body };
    case 'queueRemove':
      return { kind: 'queueRemove', id: k.value.id };
    case 'queueRetry':
      return { kind: 'queueRetry', id: k.value.id, all: k.value.all };
    default:
      throw new MxError('UNSUPPORTED', 'command of an unknown kind (is this agent older than its controller?)');
  }
}

export function commandToWire(c: AgentCommand): NonNullable<Command['kind']> {
  switch (c.kind) {
    case 'flush':
      return { $case: 'flush', value: { match: c.match } };
    case 'queueList':
      return { $case: 'queueList', value: { match: c.match, state: c.state, limit: c.limit } };
    case 'queueShow':
      return { $case: 'queueShow', value: { id: c.id, body: c.body } };
    case 'queueRemove':
      return { $case: 'queueRemove', value: { id: c.id } };
    case 'queueRetry':
      return { $case: 'queueRetry', value: { id: c.id, all: c.all } };
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
