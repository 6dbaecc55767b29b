import { MxError } from '../shared/errors.js';
import { checkChangeSelection, type QueueSelection } from '../shared/queue-selection.js';
import { selectionPick } from './queue-select.js';
import type { BulkChange, RecipientRow, RecipientState, RowPick, Spool, Touched } from './spool/spool.js';

/** Operator views and surgery on a queue, shared by the local CLI (`--data-dir`) and controller commands. */

export interface QueueEntry {
  id: string;
  sender: string;
  arrivedAt: number;
  ageSeconds: number;
  size: number;
  recipients: { rcpt: string; state: RecipientState; attempts: number; nextAttempt: number | null; lastReply: string | null; route: string | null; hold: string | null }[];
}

export interface QueueFilter extends QueueSelection {
  limit?: number;
}

function entry(queue: Spool, id: string, rows: RecipientRow[], now: number): QueueEntry | undefined {
  const msg = queue.message(id);
  if (!msg) return undefined;
  return {
    id,
    sender: msg.sender,
    arrivedAt: msg.arrivedAt,
    ageSeconds: Math.round((now - msg.arrivedAt) / 1000),
    size: msg.size,
    recipients: rows.map((r) => ({ rcpt: r.rcpt, state: r.state, attempts: r.attempts, nextAttempt: r.dueAt, lastReply: r.lastReply, route: r.route, hold: r.holdKind })),
  };
}

/** `queue ls`: the selected messages (at most `limit`, oldest first) and how many more the selection has. */
export interface QueueList {
  entries: QueueEntry[];
  /** Selected messages not listed because of the limit. */
  more: number;
}

export function listQueue(queue: Spool, filter: QueueFilter = {}, now = Date.now()): QueueList {
  const pick = selectionPick(filter, now);
  const byMsg = new Map<string, RecipientRow[]>();
  for (const row of queue.allRecipients()) {
    if (!pick(row)) continue;
    const list = byMsg.get(row.msgId) ?? [];
    list.push(row);
    byMsg.set(row.msgId, list);
  }
  const entries: QueueEntry[] = [];
  for (const [id, rows] of byMsg) {
    if (filter.limit !== undefined && entries.length >= filter.limit) break;
    const e = entry(queue, id, rows, now);
    if (e) entries.push(e);
  }
  return { entries, more: Math.max(0, byMsg.size - entries.length) };
}

export interface MessageDetail extends QueueEntry {
  headers: string;
  /** With `body`: the stored message (its first MESSAGE_SHOWN bytes), base64 (it may be 8-bit), and whether it was cut. */
  message?: { base64: string; truncated: boolean };
}

/** How much of a message `queue show --body` carries: a command result is one control-plane message (NATS: 1 MB at most, base64 included). */
export const MESSAGE_SHOWN = 512 * 1024;

export function showMessage(queue: Spool, id: string, opts: { body?: boolean } = {}, now = Date.now()): MessageDetail {
  const e = entry(queue, id, queue.recipientsOf(id), now);
  const body = queue.body(id);
  if (!e || !body) throw new MxError('NOT_FOUND', `no message ${id} in the queue`);
  const end = body.indexOf('\r\n\r\n');
  const detail: MessageDetail = { ...e, headers: body.subarray(0, end === -1 ? body.length : end).toString('utf8') };
  if (opts.body) detail.message = { base64: body.subarray(0, MESSAGE_SHOWN).toString('base64'), truncated: body.length > MESSAGE_SHOWN };
  return detail;
}

/** What `queue hold|release|retry|rm` do to the recipients a selection picks. */
export type BulkAction = 'hold' | 'release' | 'retry' | 'remove';

/** The command an action is, as the operator types it. */
export const commandName = (action: BulkAction) => `queue ${action === 'remove' ? 'rm' : action}`;

export interface BulkResult extends Touched {
  action: BulkAction;
  /** Nothing was changed: the counts are what the command would touch now. */
  dryRun: boolean;
}

/**
 * The change and the rows it may apply to. An operator hold (postsuper -h) keeps waiting recipients until an
 * operator releases them, whatever the routes say; a release frees only operator holds, so a route's hold (a
 * destination no agent may deliver to) stays. In-flight recipients are neither held nor retried: their attempt
 * ends first. Remove (postsuper -d) takes every picked row, in flight or not.
 */
const BULK: Record<BulkAction, { change: BulkChange; only?: RowPick }> = {
  hold: { change: { kind: 'hold', holdKind: 'operator', reply: 'held by operator' } },
  release: { change: { kind: 'release' }, only: (row) => row.holdKind === 'operator' },
  retry: { change: { kind: 'retry' } },
  remove: { change: { kind: 'remove' } },
};

/**
 * Applies `action` to the selected recipients (or, with `dryRun`, counts them). A selection by id naming no
 * queued message is NOT_FOUND, so a fleet-wide search can tell the agents that hold it.
 */
export async function changeQueue(queue: Spool, action: BulkAction, sel: QueueSelection, opts: { dryRun?: boolean } = {}, now = Date.now()): Promise<BulkResult> {
  checkChangeSelection(sel, commandName(action));
  if (sel.id !== undefined && !queue.message(sel.id)) throw new MxError('NOT_FOUND', `no message ${sel.id} in the queue`);
  const { change, only } = BULK[action];
  const chosen = selectionPick(sel, now);
  const pick: RowPick = only ? (row) => only(row) && chosen(row) : chosen;
  const dryRun = opts.dryRun ?? false;
  const done = await queue.bulk(change, pick, { dryRun, now, ...(sel.id === undefined ? {} : { msgId: sel.id }) });
  return { action, dryRun, ...done };
}
