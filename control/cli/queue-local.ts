import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { holdMatch, listQueue, releaseMatch, removeMessage, retryMessages, showMessage } from '../../agent/queue-ops.js';
import { Queue, type RecipientState } from '../../agent/queue.js';
import { UsageError } from '../../shared/errors.js';
import { emit, type OutputOptions } from './output.js';
import { renderEntries } from './queue-render.js';

export { renderEntries };

export function openLocalQueue(dataDir: string): Queue {
  if (!existsSync(join(dataDir, 'queue.db'))) throw new UsageError(`--data-dir ${dataDir}: no queue.db there`);
  return new Queue(dataDir, { mustExist: true, skipCheck: true });
}

/** Runs `fn` against the queue under --data-dir, always closing it. */
export function withLocalQueue<T>(dataDir: string, fn: (q: Queue) => T): T {
  const q = openLocalQueue(dataDir);
  try {
    return fn(q);
  } finally {
    q.close();
  }
}

export type LocalQueueOptions = OutputOptions & { dataDir: string; match?: string; state?: string; limit?: string; all?: boolean };

export const localQueue = {
  ls(opts: LocalQueueOptions): void {
    const limit = opts.limit === undefined ? undefined : Number(opts.limit);
    if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new UsageError(`--limit ${opts.limit}: expected a positive integer`);
    const entries = withLocalQueue(opts.dataDir, (q) =>
      listQueue(q, { ...(opts.match ? { match: opts.match } : {}), ...(opts.state ? { state: opts.state as RecipientState } : {}), ...(limit ? { limit } : {}) }),
    );
    emit(opts, entries, renderEntries);
  },
  show(id: string, opts: LocalQueueOptions): void {
    const detail = withLocalQueue(opts.dataDir, (q) => showMessage(q, id));
    emit(opts, detail, (d) => `${renderEntries([d])}\n\n${d.headers}`);
  },
  rm(id: string, opts: LocalQueueOptions): void {
    withLocalQueue(opts.dataDir, (q) => removeMessage(q, id));
    emit(opts, { removed: id }, () => `removed ${id}`);
  },
  retry(id: string | undefined, opts: LocalQueueOptions): void {
    if (!id && !opts.all) throw new UsageError('queue retry: give a queue ID or --all');
    const due = withLocalQueue(opts.dataDir, (q) => retryMessages(q, id ? { id } : { all: true }));
    emit(opts, { due }, (r) => `${r.due} recipient(s) due now; the agent picks them up within its poll interval`);
  },
  hold(match: string, opts: LocalQueueOptions): void {
    const held = withLocalQueue(opts.dataDir, (q) => holdMatch(q, match));
    emit(opts, { held }, (r) => `${r.held} recipient(s) held by operator`);
  },
  release(match: string, opts: LocalQueueOptions): void {
    const released = withLocalQueue(opts.dataDir, (q) => releaseMatch(q, match));
    emit(opts, { released }, (r) => `${r.released} recipient(s) released`);
  },
};
