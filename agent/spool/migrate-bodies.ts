import type Database from 'better-sqlite3';

/**
 * The upgrade of a queue file from the schema that kept each body inline in its `messages` row to the one with
 * bodies in `message_bodies` (issue 14: claimDue joins `messages`, and 4 KB bodies there made that join walk a
 * b-tree of one or two rows per page).
 *
 * Bodies move in batches, each one transaction that copies a batch into message_bodies and empties the same
 * rows' inline bodies. So at any point a crash leaves every message's bytes in exactly one place it is read from
 * on the next open (a row already copied has its body in message_bodies; the rest still inline), the pages freed
 * by one batch are reused by the next (the file does not grow by the queue's size), and the WAL stays at one
 * batch. The last step drops the emptied column, also in one transaction; until it has committed, the next open
 * simply finds the old column again and resumes.
 */

/** Rows per migration transaction: ~4 MB of 4 KB bodies. */
export const MIGRATION_BATCH = 1000;

/** Whether `messages` still has the old inline body column. */
function hasInlineBodies(db: Database.Database): boolean {
  const columns = db.prepare("SELECT name FROM pragma_table_info('messages')").pluck().all() as string[];
  return columns.includes('body');
}

/**
 * Moves inline bodies to message_bodies, if the file has any (a no-op on a current file). Runs at open, before
 * anything else reads or writes the queue; returns the messages moved.
 */
export function migrateInlineBodies(db: Database.Database, batch = MIGRATION_BATCH): number {
  if (!hasInlineBodies(db)) return 0;
  // A row whose body is already in message_bodies (moved by a batch before a crash) is skipped by the anti-join;
  // its inline body is empty then, so nothing is lost by never copying it again.
  const next = db.prepare('SELECT id FROM messages m WHERE id > ? AND NOT EXISTS (SELECT 1 FROM message_bodies b WHERE b.msg_id = m.id) ORDER BY id LIMIT ?').pluck();
  const copy = db.prepare('INSERT INTO message_bodies (msg_id, body) SELECT id, body FROM messages WHERE id IN (SELECT value FROM json_each(?))');
  const empty = db.prepare("UPDATE messages SET body = x'' WHERE id IN (SELECT value FROM json_each(?))");
  const moveBatch = db.transaction((after: string) => {
    const ids = next.all(after, batch) as string[];
    if (!ids.length) return undefined;
    const json = JSON.stringify(ids);
    copy.run(json);
    empty.run(json);
    return { last: ids.at(-1)!, n: ids.length };
  });
  let moved = 0;
  for (let step = moveBatch(''); step; step = moveBatch(step.last)) moved += step.n;
  // Every body is in message_bodies now: the column goes (a rewrite of the small rows left).
  db.exec('ALTER TABLE messages DROP COLUMN body');
  return moved;
}
