import { MESSAGE_SHOWN, type BulkAction, type BulkResult, type MessageDetail, type QueueEntry, type QueueList } from '../../../agent/queue-ops.js';
import type { QueueShape } from '../../../agent/queue-shape.js';
import type { ShadowList } from '../../../agent/shadow/listing.js';
import { formatDuration } from '../../../shared/units.js';
import { table } from '../output.js';

/** Human table of queue entries; shared by the local (--data-dir) and fleet-wide (--agent) queue commands. */
export function renderEntries(entries: readonly QueueEntry[]): string {
  if (entries.length === 0) return 'queue is empty';
  const rows = entries.flatMap((e) =>
    e.recipients.map((r, i) => [
      i === 0 ? e.id : '',
      i === 0 ? formatDuration(e.ageSeconds * 1000) : '',
      i === 0 ? String(e.size) : '',
      i === 0 ? e.sender || '<>' : '',
      r.rcpt,
      r.state + (r.hold ? `(${r.hold})` : ''),
      r.nextAttempt ? new Date(r.nextAttempt).toISOString() : '-',
      (r.lastReply ?? '').slice(0, 60),
    ]),
  );
  return table(['ID', 'AGE', 'SIZE', 'SENDER', 'RECIPIENT', 'STATE', 'NEXT', 'LAST REPLY'], rows);
}

/** `queue ls --shadow`: the copies kept for other agents (ORIGIN: the agent whose queue the message is in). */
export function renderShadowList(list: ShadowList, now = Date.now()): string {
  if (list.copies.length === 0) return 'no shadow copies';
  const rows = list.copies.map((c) => [c.origin, c.id, formatDuration(now - c.arrivedAt), String(c.size), c.sender || '<>', c.recipients.join(', ')]);
  const more = list.more ? `; ${list.more} more not shown (--limit)` : '';
  return `${table(['ORIGIN', 'ID', 'AGE', 'SIZE', 'SENDER', 'RECIPIENTS'], rows)}
-- ${list.copies.length + list.more} shadow copies${more}`;
}

/** `queue show`: the entry, then its headers, or with --body the stored message as it will be sent. */
export function renderDetail(d: MessageDetail): string {
  const tail = d.message ? `${Buffer.from(d.message.base64, 'base64').toString('latin1')}${d.message.truncated ? `\n[... cut at ${MESSAGE_SHOWN} bytes of ${d.size}]` : ''}` : d.headers;
  return `${renderEntries([d])}\n\n${tail}`;
}

/** Bytes as mailq shows them, rounded up to kilobytes. */
const kilobytes = (bytes: number) => `${Math.ceil(bytes / 1024)} KB`;

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * The mailq-style last line: how much is listed, in how many messages and recipients, and with --limit how many
 * more messages the selection has.
 */
export function queueSummary(lists: readonly QueueList[]): string {
  const entries = lists.flatMap((l) => l.entries);
  const more = lists.reduce((n, l) => n + l.more, 0);
  const bytes = entries.reduce((n, e) => n + e.size, 0);
  const recipients = entries.reduce((n, e) => n + e.recipients.length, 0);
  return `-- ${kilobytes(bytes)} in ${plural(entries.length, 'message')}, ${plural(recipients, 'recipient')}${more ? `; ${more} more not shown (--limit)` : ''}`;
}

/** An agent's list with its summary. */
export function renderList(list: QueueList): string {
  return `${renderEntries(list.entries)}\n${queueSummary([list])}`;
}

const DONE: Record<BulkAction, [done: string, would: string]> = {
  hold: ['held (operator hold)', 'would hold'],
  release: ['released from operator hold', 'would release'],
  retry: ['made due now', 'would make due'],
  remove: ['removed', 'would remove'],
};


/** What a bulk queue change touched: "12 recipients of 5 messages removed", or what a dry run would touch. */
export function renderBulk(r: Pick<BulkResult, 'action' | 'dryRun' | 'recipients' | 'messages'>): string {
  const [done, would] = DONE[r.action];
  const counts = `${plural(r.recipients, 'recipient')} of ${plural(r.messages, 'message')}`;
  return r.dryRun ? `${would} ${counts} (dry run: nothing changed)` : `${counts} ${done}`;
}

/** The fleet's total of the agents' bulk results. */
export function bulkTotal(results: readonly BulkResult[]): string {
  const first = results[0]!;
  return renderBulk({ ...first, recipients: results.reduce((n, r) => n + r.recipients, 0), messages: results.reduce((n, r) => n + r.messages, 0) });
}


/** One line per agent under `queue shape`: how many recipients in how many domains. */
export function shapeSummary(shape: QueueShape): string {
  const total = shape.rows.reduce((n, r) => n + r.total, 0);
  return `${plural(total, 'recipient')} in ${plural(shape.rows.length, 'domain')}`;
}

/** The qshape table: a TOTAL row, then a row per domain (largest first); columns T and the age buckets in minutes. */
export function renderShape(shape: QueueShape): string {
  const b = shape.bucketsMinutes;
  const headers = ['DOMAIN', 'T', ...b.map(String), `${b[b.length - 1]}+`];
  const sum = shape.rows.reduce<number[]>((acc, r) => r.counts.map((n, i) => n + (acc[i] ?? 0)), []);
  const total = shape.rows.reduce((n, r) => n + r.total, 0);
  const line = (name: string, t: number, counts: readonly number[]) => [name, String(t), ...headers.slice(2).map((_, i) => String(counts[i] ?? 0))];
  const rows = [line('TOTAL', total, sum), ...shape.rows.map((r) => line(r.domain, r.total, r.counts))];
  return `${table(headers, rows)}\n(recipients by message age in minutes: each column counts those younger than it and older than the column before)`;
}
