import { randomBytes } from 'node:crypto';
import { MxError } from '../../shared/errors.js';

/** The spool's data types and errors, shared by its modules and re-exported by the facade (spool.ts). */

export type RecipientState = 'queued' | 'deferred' | 'inflight' | 'held';
/** Why a recipient is held: by its route (released by a table change) or by an operator (released by `queue release`). */
export type HoldKind = 'route' | 'operator';

export interface NewMessage {
  id: string;
  sender: string;
  recipients: readonly string[];
  /**
   * The message, whole or in pieces. A large one (over PART_BYTES) is stored as parts of about PART_BYTES
   * and never held in one buffer (or twice in SQLite's record) on its way in.
   */
  body: Buffer | readonly Buffer[];
  /** Bytes of this message already written with `stagePart` while it arrived; they follow `body`. */
  staged?: number;
  /** A delivery status notification we generated (routed to the sender's MX when no route matches). */
  dsn?: boolean;
  /** When it was first accepted, if not now (a shadow copy taken over: expiry counts from the origin's arrival). */
  arrivedAt?: number;
}

export interface RecipientRow {
  id: number;
  msgId: string;
  rcpt: string;
  state: RecipientState;
  attempts: number;
  dueAt: number | null;
  lastReply: string | null;
  route: string | null;
  holdKind: HoldKind | null;
  holdSince: number | null;
  heldMs: number;
}

export interface MessageRow {
  id: string;
  sender: string;
  arrivedAt: number;
  size: number;
}

/** A recipient claimed for delivery, with what delivery needs to know about its message. */
export interface ClaimedRecipient extends RecipientRow {
  sender: string;
  arrivedAt: number;
  dsn: 0 | 1;
}

export type Outcome =
  | { kind: 'delivered'; reply: string }
  | { kind: 'deferred'; reply: string; dueAt: number }
  | { kind: 'bounced'; reply: string }
  | { kind: 'held'; reply: string; holdKind: HoldKind };

/** A delivery outcome to write: delivered and bounced recipients leave the queue. */
export interface OutcomeRecord {
  row: RecipientRow;
  route: string | null;
  outcome: Outcome;
}

/** What the writer needs of an OutcomeRecord (the rest of the row stays on this side of postMessage). */
export interface OutcomeWrite {
  id: number;
  msgId: string;
  route: string | null;
  outcome: Outcome;
}

export function outcomeWrite({ row, route, outcome }: OutcomeRecord): OutcomeWrite {
  return { id: row.id, msgId: row.msgId, route, outcome };
}

/** Messages larger than this are stored in parts of about this size (table body_parts). */
export const PART_BYTES = 1024 * 1024;

export function bodySize(body: Buffer | readonly Buffer[]): number {
  return Buffer.isBuffer(body) ? body.length : body.reduce((n, b) => n + b.length, 0);
}

/** Randomness for queue ids, drawn in bulk: a randomBytes call per id was ~1% of the event loop (profile). */
const idRandomness = { bytes: Buffer.alloc(0), at: 0 };

/** Sortable, unique, Postfix-looking queue id: time in base32 + randomness. */
export function newQueueId(now = Date.now()): string {
  const r = idRandomness;
  if (r.at + 5 > r.bytes.length) [r.bytes, r.at] = [randomBytes(4096), 0];
  r.at += 5;
  return (now.toString(32) + r.bytes.toString('hex', r.at - 5, r.at)).toUpperCase();
}

/** Storage trouble the SMTP side must answer with 4xx: FULL -> 452 4.3.1, anything else -> 451 4.3.0. */
export class QueueStorageError extends MxError {
  constructor(
    readonly full: boolean,
    message: string,
  ) {
    super(full ? 'QUEUE_FULL' : 'QUEUE_ERROR', message);
  }
}

export function storageError(err: unknown): QueueStorageError {
  const code = (err as { code?: string }).code ?? '';
  const full = code === 'SQLITE_FULL' || /disk|full/i.test(String((err as Error).message));
  return new QueueStorageError(full, `${code || 'error'}: ${(err as Error).message}`);
}

/** The columns of a RecipientRow, from `recipients r`. */
export const RCPT_COLUMNS = `r.id, r.msg_id AS msgId, r.rcpt, r.state, r.attempts, r.due_at AS dueAt, r.last_reply AS lastReply,
  r.route, r.hold_kind AS holdKind, r.hold_since AS holdSince, r.held_ms AS heldMs`;

/** The columns of a ClaimedRecipient, from `recipients r JOIN messages m`. */
export const CLAIMED_COLUMNS = `${RCPT_COLUMNS}, m.sender, m.arrived_at AS arrivedAt, m.dsn`;
