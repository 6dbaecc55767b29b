import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { holdMatch, listQueue, releaseMatch, removeMessage, retryMessages, showMessage } from '../../../agent/queue-ops.js';
import { Spool } from '../../../agent/spool/spool.js';
import { UsageError } from '../../../shared/errors.js';
import { checkListFilter } from '../args.js';
import { emit, type OutputOptions } from '../output.js';
import type { QueueBackend } from './queue-backend.js';
import { queueSummary, renderDetail, renderEntries } from './queue-render.js';

/** The queue subcommands on one agent's queue file (--data-dir), also while the agent runs. Loads SQLite. */

function openLocalQueue(dataDir: string): Spool {
  if (!existsSync(join(dataDir, 'queue.db'))) throw new UsageError(`--data-dir ${dataDir}: no queue.db there`);
  return new Spool(dataDir, { mustExist: true, skipCheck: true });
}

/** Runs `fn` against the queue under --data-dir, always closing it. */
async function withLocalQueue<T>(dataDir: string, fn: (q: Spool) => T | Promise<T>): Promise<T> {
  const q = openLocalQueue(dataDir);
  try {
    return await fn(q);
  } finally {
    await q.close();
  }
}

/** The queue file under `dataDir`: the subcommands both sides have, plus the local-only hold and release. */
export function localQueue(dataDir: string) {
  const withQueue = <T>(fn: (q: Spool) => T | Promise<T>) => withLocalQueue(dataDir, fn);
  return {
    async ls(opts) {
      const filter = checkListFilter(opts);
      const entries = await withQueue((q) => listQueue(q, { ...(opts.match ? { match: opts.match } : {}), ...filter }));
      emit(opts, entries, (e) => `${renderEntries(e)}\n${queueSummary(e)}`);
    },
    async show(id, opts) {
      const detail = await withQueue((q) => showMessage(q, id, { body: opts.body ?? false }));
      emit(opts, detail, renderDetail);
    },
    async rm(id, opts) {
      await withQueue((q) => removeMessage(q, id));
      emit(opts, { removed: id }, () => `removed ${id}`);
    },
    async retry(id, opts) {
      if (!id && !opts.all) throw new UsageError('queue retry: give a queue ID or --all');
      const due = await withQueue((q) => retryMessages(q, id ? { id } : { all: true }));
      emit(opts, { due }, (r) => `${r.due} recipient(s) due now; the agent picks them up within its poll interval`);
    },
    async hold(match: string, opts: OutputOptions) {
      const held = await withQueue((q) => holdMatch(q, match));
      emit(opts, { held }, (r) => `${r.held} recipient(s) held by operator`);
    },
    async release(match: string, opts: OutputOptions) {
      const released = await withQueue((q) => releaseMatch(q, match));
      emit(opts, { released }, (r) => `${r.released} recipient(s) released`);
    },
  } satisfies QueueBackend & Record<'hold' | 'release', (match: string, opts: OutputOptions) => Promise<void>>;
}
