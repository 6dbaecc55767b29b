import { addressKey } from '../shared/address.js';
import type { QueueSelection } from '../shared/queue-selection.js';
import { normalizeMatch, RouteTable } from '../shared/routes.js';
import type { ClaimedRecipient, RowPick } from './spool/spool.js';

/** A predicate for "recipient falls under MATCH" (address, domain or .parent). */
export function coversMatch(match: string): (address: string) => boolean {
  const key = normalizeMatch(match).key;
  return (address) => RouteTable.covers(key, address);
}

const senderKey = (sender: string) => (sender === '' ? '' : addressKey(sender));

/** A queue selection (see QueueSelection) as a row predicate; the row carries its message's sender and arrival. */
export function selectionPick(sel: QueueSelection, now = Date.now()): RowPick {
  const covers = sel.match === undefined ? undefined : coversMatch(sel.match);
  const sender = sel.sender === undefined ? undefined : senderKey(sel.sender);
  const arrivedBy = sel.olderThanMs === undefined ? undefined : now - sel.olderThanMs;
  return (row: ClaimedRecipient) =>
    (sel.id === undefined || row.msgId === sel.id) &&
    (sel.state === undefined || row.state === sel.state) &&
    (covers === undefined || covers(addressKey(row.rcpt))) &&
    (sender === undefined || senderKey(row.sender) === sender) &&
    (arrivedBy === undefined || row.arrivedAt <= arrivedBy);
}
