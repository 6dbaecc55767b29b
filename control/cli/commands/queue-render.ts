import { MESSAGE_SHOWN, type MessageDetail, type QueueEntry } from '../../../agent/queue-ops.js';
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

/** `queue show`: the entry, then its headers, or with --body the stored message as it will be sent. */
export function renderDetail(d: MessageDetail): string {
  const tail = d.message ? `${Buffer.from(d.message.base64, 'base64').toString('latin1')}${d.message.truncated ? `\n[... cut at ${MESSAGE_SHOWN} bytes of ${d.size}]` : ''}` : d.headers;
  return `${renderEntries([d])}\n\n${tail}`;
}

/** Bytes as mailq shows them, rounded up to kilobytes. */
const kilobytes = (bytes: number) => `${Math.ceil(bytes / 1024)} KB`;

/** The mailq-style last line: how much is queued, in how many messages and recipients. */
export function queueSummary(entries: readonly QueueEntry[]): string {
  const bytes = entries.reduce((n, e) => n + e.size, 0);
  const recipients = entries.reduce((n, e) => n + e.recipients.length, 0);
  return `-- ${kilobytes(bytes)} in ${entries.length} message${entries.length === 1 ? '' : 's'}, ${recipients} recipient${recipients === 1 ? '' : 's'}`;
}
