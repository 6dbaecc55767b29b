import type { QueueEntry } from '../../../agent/queue-ops.js';
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
