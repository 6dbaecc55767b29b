import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { holdMatch, listQueue, releaseMatch, removeMessage, retryMessages, showMessage } from '../../../agent/queue-ops.js';
import { Queue } from '../../../agent/queue.js';
import { UsageError } from '../../../shared/errors.js';
import { checkListFilter } from '../args.js';
import { emit, type OutputOptions } from '../output.js';
import type { QueueBackend } from './queue.js';
import { renderEntries } from './queue-render.js';

/** The queue subcommands on one agent's queue file (--data-dir), also while the agent runs. Loads SQLite. */

function openLocalQueue(dataDir: string): Queue {
  if (!existsSync(join(dataDir, 'queue.db'))) throw new UsageError(`--data-dir ${dataDir}: no queue.db there`);
  return new Queue(dataDir, { mustExist: true, skipCheck: true });
}

/** Runs `fn` against the queue under --data-dir, always closing it. */
function withLocalQueue<T>(dataDir: string, fn: (q: Queue) => T): T {
  const q = openLocalQueue(dataDir);
  try {
    return fn(q);
  } finally {
    q.close();
  }
}

/** The queue file under `dataDir`: the subcommands both sides have, plus the local-only hold and release. */
export function localQueue(dataDir: string) {
  const withQueue = <T>(fn: (q: Queue) => T) => withLocalQueue(dataDir, fn);
  return {
    ls(opts) {
      const filter = checkListFilter(opts);
      const entries = withQueue((q) => listQueue(q, { ...(opts.match ? { match: opts.match } : {}), ...filter }));
      emit(opts, entries, renderEntries);
    },
    show(id, opts) {
      const detail = withQueue((q) => showMessage(q, id));
      emit(opts, detail, (d) => `${renderEntries([d])}\n\n${d.headers}`);
    },
    rm(id, opts) {
      withQueue((q) => removeMessage(q, id));
      emit(opts, { removed: id }, () => `removed ${id}`);
    },
    retry(id, opts) {
      if (!id && !opts.all) throw new UsageError('queue retry: give a queue ID or --all');
      const due = withQueue((q) => retryMessages(q, id ? { id } : { all: true }));
      emit(opts, { due }, (r) => `${r.due} recipient(s) due now; the agent picks them up within its poll interval`);
    },
    hold(match: string, opts: OutputOptions) {
      const held = withQueue((q) => holdMatch(q, match));
      emit(opts, { held }, (r) => `${r.held} recipient(s) held by operator`);
    },
    release(match: string, opts: OutputOptions) {
      const released = withQueue((q) => releaseMatch(q, match));
      emit(opts, { released }, (r) => `${r.released} recipient(s) released`);
    },
  } satisfies QueueBackend & Record<'hold' | 'release', (match: string, opts: OutputOptions) => void>;
}
