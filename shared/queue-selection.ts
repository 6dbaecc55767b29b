import { MxError } from './errors.js';

/** A recipient's state in an agent's queue, as operators name it. */
export const QUEUE_STATES = ['queued', 'deferred', 'inflight', 'held'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

/**
 * Which queued mail an operator's queue command applies to (postsuper's ALL / queue id / deferred, plus the
 * route match, sender and age): every condition given must hold. The same selection comes from the CLI, the
 * wire, and the commands on a local queue file.
 */
export interface QueueSelection {
  /** One message by queue id (ids are per agent). */
  id?: string;
  /** Recipients under this route match (address, domain or .parent). */
  match?: string;
  state?: QueueState;
  /** The envelope sender; "" is the null sender <>. */
  sender?: string;
  /** Messages that arrived at least this long ago. */
  olderThanMs?: number;
  /** Nothing else narrows it: every message (a change without any condition must say so). */
  all?: boolean;
}

/** A recipient state named by an operator or a remote command, checked. */
export function parseQueueState(text: string, label = 'state'): QueueState {
  const state = QUEUE_STATES.find((s) => s === text);
  if (!state) throw new MxError('USAGE', `${label} ${text}: expected one of ${QUEUE_STATES.join(', ')}`);
  return state;
}

/** Whether the selection has a condition (an id or a filter), as opposed to "all" or nothing at all. */
export function narrows(sel: QueueSelection): boolean {
  return sel.id !== undefined || sel.match !== undefined || sel.state !== undefined || sel.sender !== undefined || sel.olderThanMs !== undefined;
}

/**
 * Refuses a selection that would change mail without saying which: no condition and no `all` (an empty
 * `queue rm` must not mean every message), or `all` beside an id.
 */
export function checkChangeSelection(sel: QueueSelection, command: string): void {
  if (sel.all && sel.id !== undefined) throw new MxError('USAGE', `${command}: give a queue ID or --all, not both`);
  if (!sel.all && !narrows(sel)) throw new MxError('USAGE', `${command}: give a queue ID, --all, or a selection (--match, --state, --sender, --older-than)`);
}
