import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { changeQueue, commandName, listQueue, showMessage } from '../../../agent/queue-ops.js';
import { queueShape } from '../../../agent/queue-shape.js';
import { Spool } from '../../../agent/spool/spool.js';
import { UsageError } from '../../../shared/errors.js';
import { checkChangeFlags, checkLimit, checkSelection } from '../args.js';
import { emit } from '../output.js';
import type { QueueBackend } from './queue-backend.js';
import { renderBulk, renderDetail, renderList, renderShadowList, renderShape } from './queue-render.js';
import { listShadow } from '../../../agent/shadow/listing.js';

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

/** The queue file under `dataDir`. A running agent sees released and retried mail at its next poll. */
export function localQueue(dataDir: string): QueueBackend {
  const withQueue = <T>(fn: (q: Spool) => T | Promise<T>) => withLocalQueue(dataDir, fn);
  return {
    async ls(opts) {
      if (opts.shadow) {
        const { limit = 0 } = checkLimit(opts);
        const list = await withQueue((q) => listShadow(q, limit));
        return emit(opts, list, (l) => renderShadowList(l));
      }
      const filter = { ...checkSelection(opts), ...checkLimit(opts) };
      const list = await withQueue((q) => listQueue(q, filter));
      emit(opts, list, renderList);
    },
    async shape(opts) {
      const select = checkSelection(opts);
      const shape = await withQueue((q) => queueShape(q, select));
      emit(opts, shape, renderShape);
    },
    async show(id, opts) {
      const detail = await withQueue((q) => showMessage(q, id, { body: opts.body ?? false }));
      emit(opts, detail, renderDetail);
    },
    async change(action, id, opts) {
      const select = checkChangeFlags(commandName(action), opts, id);
      const result = await withQueue((q) => changeQueue(q, action, select, { dryRun: opts.dryRun ?? false }));
      emit(opts, result, renderBulk);
    },
  };
}
