import { addressKey } from '../shared/address.js';
import { MxError } from '../shared/errors.js';
import { normalizeMatch, RouteTable } from '../shared/routes.js';
import type { RecipientRow, RecipientState, Spool } from './spool/spool.js';

/** Operator views and surgery on a queue, shared by the local CLI (`--data-dir`) and controller commands. */

export interface QueueEntry {
  id: string;
  sender: string;
  arrivedAt: number;
  ageSeconds: number;
  size: number;
  recipients: { rcpt: string; state: RecipientState; attempts: number; nextAttempt: number | null; lastReply: string | null; route: string | null; hold: string | null }[];
}

export interface QueueFilter {
  match?: string;
  state?: RecipientState;
  limit?: number;
}

const STATES: readonly RecipientState[] = ['queued', 'deferred', 'inflight', 'held'];

/** A recipient state named by an operator or a remote command, checked. */
export function parseRecipientState(text: string): RecipientState {
  const state = STATES.find((s) => s === text);
  if (!state) throw new MxError('USAGE', `state must be one of ${STATES.join(', ')}, not "${text}"`);
  return state;
}

/** A predicate for "recipient falls under MATCH" (address, domain or .parent). */
export function coversMatch(match: string): (address: string) => boolean {
  const key = normalizeMatch(match).key;
  return (address) => RouteTable.covers(key, address);
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

export function listQueue(queue: Spool, filter: QueueFilter = {}, now = Date.now()): QueueEntry[] {
  const covers = filter.match ? coversMatch(filter.match) : undefined;
  const byMsg = new Map<string, RecipientRow[]>();
  for (const row of queue.allRecipients()) {
    if (filter.state && row.state !== filter.state) continue;
    if (covers && !covers(addressKey(row.rcpt))) continue;
    const list = byMsg.get(row.msgId) ?? [];
    list.push(row);
    byMsg.set(row.msgId, list);
  }
  const out: QueueEntry[] = [];
  for (const [id, rows] of byMsg) {
    if (filter.limit !== undefined && out.length >= filter.limit) break;
    const e = entry(queue, id, rows, now);
    if (e) out.push(e);
  }
  return out;
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

export async function removeMessage(queue: Spool, id: string): Promise<void> {
  if (!(await queue.remove(id))) throw new MxError('NOT_FOUND', `no message ${id} in the queue`);
}

/** Makes one message (or all deferred mail) due now. Returns the number of recipients made due. */
export async function retryMessages(queue: Spool, target: { id: string } | { all: true }): Promise<number> {
  if ('id' in target) {
    if (!queue.message(target.id)) throw new MxError('NOT_FOUND', `no message ${target.id} in the queue`);
    return queue.retryWhere((row) => row.msgId === target.id);
  }
  return queue.retryWhere();
}

/** Operator hold (postsuper -h): recipients under MATCH stay until `releaseMatch`, whatever the routes say. */
export function holdMatch(queue: Spool, match: string): Promise<number> {
  const covers = coversMatch(match);
  return queue.holdWhere((row) => covers(addressKey(row.rcpt)), 'operator', 'held by operator');
}

export function releaseMatch(queue: Spool, match: string): Promise<number> {
  const covers = coversMatch(match);
  return queue.releaseWhere((row) => row.holdKind === 'operator' && covers(addressKey(row.rcpt)));
}
