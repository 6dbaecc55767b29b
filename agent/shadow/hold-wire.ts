import type { ShadowHold } from '../../proto/gen/mxswitch/v1/shadow.js';
import type { ShadowHoldRow } from '../spool/spool.js';
import type { HoldKind } from '../spool/types.js';

const HOLD_KINDS: readonly string[] = ['route', 'operator'] satisfies HoldKind[];

/**
 * Hold states between the queue's rows and the wire. On the wire "not held" is 0 (proto3 has no null); a hold
 * since the epoch itself cannot happen.
 */
export function holdToWire(h: ShadowHoldRow): ShadowHold {
  // uint64 on the wire: a negative held_ms (a clock stepped back during a hold) fails the whole batch's
  // serialization, and the notice, put back after each failure, every batch after it.
  return { recipient: h.rcpt, heldMs: Math.max(0, Math.round(h.heldMs)), holdSinceMs: Math.max(0, Math.round(h.holdSince ?? 0)), holdKind: h.holdKind ?? '' };
}

export function holdFromWire(h: ShadowHold): ShadowHoldRow {
  // A kind this version does not know (a newer peer's) counts as not held by an operator: the route decides.
  return { rcpt: h.recipient, heldMs: h.heldMs, holdSince: h.holdSinceMs || null, holdKind: HOLD_KINDS.includes(h.holdKind) ? (h.holdKind as HoldKind) : null };
}
