import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { Spool, type ShadowCopyRow } from '../../agent/spool/spool.js';
import { tempDir, waitFor } from '../helpers/agent.js';
import { copiedHolds, send, shadowFleet, type FleetAgent } from './helpers.js';

/** The shadow_rcpts table as queue files made before hold states were kept in it. */
const OLD_SHADOW_RCPTS = 'CREATE TABLE shadow_rcpts (origin TEXT NOT NULL, msg_id TEXT NOT NULL, rcpt TEXT NOT NULL, PRIMARY KEY (origin, msg_id, rcpt)) WITHOUT ROWID';

const copy = (id: string, recipients: string[], extra: Partial<ShadowCopyRow> = {}): ShadowCopyRow => ({
  id,
  sender: 's@sender.test',
  recipients,
  body: Buffer.from(`Message-ID: <${id}@sender.test>\r\n\r\nbody\r\n`),
  arrivedAt: Date.now() - 60_000,
  dsn: false,
  ...extra,
});

/** held_ms per recipient of a message in `spool`'s own queue. */
const heldOf = (spool: Spool, id: string) => Object.fromEntries(spool.recipientsOf(id).map((r) => [r.rcpt, r.heldMs]));

test('shadow tables on a real queue file: an old file gains the hold columns at open; copies and hold notices keep held time; adopt carries it into the queue, a hold still on counted up to the takeover', async (t) => {
  const dir = tempDir('mxs-held-copies-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  // A queue file of the older schema, with a copy stored by it (no hold columns).
  await new Spool(dir).close();
  const raw = new Database(join(dir, 'queue.db'));
  raw.exec(`DROP TABLE shadow_rcpts; ${OLD_SHADOW_RCPTS}`);
  raw.prepare("INSERT INTO shadow_copies (origin, id, sender, arrived_at, dsn, stored_at, body) VALUES ('peer-x', 'OLD1', 's@sender.test', ?, 0, ?, ?)").run(Date.now(), Date.now(), Buffer.from('old\r\n'));
  raw.prepare("INSERT INTO shadow_rcpts (origin, msg_id, rcpt) VALUES ('peer-x', 'OLD1', 'old@example.com')").run();
  raw.close();

  const spool = new Spool(dir);
  t.after(() => spool.close());
  const look = new Database(join(dir, 'queue.db'), { readonly: true });
  const columns = look.prepare("SELECT name FROM pragma_table_info('shadow_rcpts')").pluck().all();
  look.close();
  assert.deepEqual(columns, ['origin', 'msg_id', 'rcpt', 'held_ms', 'hold_since', 'hold_kind'], 'columns added to the old table');

  const holdStart = Date.now() - 7_000;
  await spool.shadowStore([
    {
      origin: 'peer-x',
      copies: [
        // Re-shadowed after a hold of 5 s, released: a@ carries it, b@ was never held.
        copy('M1', ['a@example.com', 'b@example.com'], { holds: [{ rcpt: 'a@example.com', heldMs: 5_000, holdSince: null, holdKind: null }] }),
        copy('M2', ['c@example.com']),
        copy('M3', ['d@example.com']),
        // Held by an operator (queue hold) at the origin: still held after the takeover, until queue release.
        copy('M4', ['e@example.com', 'f@example.com'], { holds: [{ rcpt: 'e@example.com', heldMs: 0, holdSince: holdStart, holdKind: 'operator' }] }),
      ],
      discards: [],
      // In the same batch as its copy: applied after it.
      holds: [{ id: 'M2', holds: [{ rcpt: 'c@example.com', heldMs: 1_000, holdSince: holdStart, holdKind: 'route' }] }],
    },
  ]);
  // Held, then released (the newer state replaces the older): M3's d@ was held 2 s.
  await spool.shadowStore([{ origin: 'peer-x', copies: [], discards: [], holds: [{ id: 'M3', holds: [{ rcpt: 'd@example.com', heldMs: 0, holdSince: holdStart, holdKind: 'route' }] }] }]);
  await spool.shadowStore([{ origin: 'peer-x', copies: [], discards: [], holds: [{ id: 'M3', holds: [{ rcpt: 'd@example.com', heldMs: 2_000, holdSince: null, holdKind: null }] }, { id: 'GONE', holds: [{ rcpt: 'x@example.com', heldMs: 1, holdSince: null, holdKind: null }] }] }]);

  const before = Date.now();
  const adopted = await spool.shadowAdopt('peer-x');
  const after = Date.now();
  assert.deepEqual(adopted, { messages: 5, recipients: 7 });
  assert.deepEqual(heldOf(spool, 'M1'), { 'a@example.com': 5_000, 'b@example.com': 0 });
  assert.deepEqual(heldOf(spool, 'M3'), { 'd@example.com': 2_000 });
  assert.deepEqual(heldOf(spool, 'OLD1'), { 'old@example.com': 0 }, 'a copy stored before the migration: never held');
  // Held since holdStart at the takeover: 1 s before plus the time from holdStart up to the adoption.
  const m2 = heldOf(spool, 'M2')['c@example.com']!;
  assert.ok(m2 >= 1_000 + (before - holdStart) && m2 <= 1_000 + (after - holdStart), `M2 held ${m2} ms`);
  // Adopted rows are due now, not held: the adopting agent's scheduler holds them anew if their route is held.
  assert.deepEqual(spool.recipientsOf('M2').map((r) => [r.state, r.holdSince]), [['queued', null]]);
  // An operator's hold is not the adopter's table's to decide: held, counted on from the takeover.
  const m4 = spool.recipientsOf('M4').map((r) => [r.rcpt, r.state, r.holdKind, r.dueAt]).sort();
  assert.deepEqual(m4, [['e@example.com', 'held', 'operator', null], ['f@example.com', 'queued', null, m4[1]![3]]]);
  assert.ok(typeof m4[1]![3] === 'number', 'the recipient that was not held is due');
  const e = spool.recipientsOf('M4').find((r) => r.rcpt === 'e@example.com')!;
  assert.ok(e.holdSince !== null && e.holdSince >= before && e.heldMs >= before - holdStart, `e@ held since ${e.holdSince}, ${e.heldMs} ms before`);
  assert.equal(spool.shadowViews.copyCount(), 0);
});

test('hold notices: a held route holds a message on the client and its peer knows since when; the release reaches the peer with the time held; an operator hold reaches it as one', async (t) => {
  const { sink, api, agents } = await shadowFleet(t, { ids: ['hn-a', 'hn-b'] });
  const [a, b] = agents as [FleetAgent, FleetAgent];
  // The next hop refuses for now: after the release the message stays queued on hn-a, and so does its copy.
  sink.rcptPolicy = () => ({ code: 450, message: '4.2.0 try again later' });
  assert.equal(await send(a.port, 1), 250);
  await waitFor('hn-b knows the recipient is held', () => copiedHolds(b.config.dataDir, 'hn-a')[0]?.holdSince != null);
  const [held] = a.agent.queue.allRecipients();
  assert.equal(held?.state, 'held');
  assert.deepEqual(copiedHolds(b.config.dataDir, 'hn-a').map((r) => [r.rcpt, r.heldMs, r.holdSince, r.holdKind]), [[held.rcpt, 0, held.holdSince, 'route']], 'the hold as hn-a has it');

  await api.setRoute('example.com', sink.target);
  await waitFor('hn-b knows the release', () => copiedHolds(b.config.dataDir, 'hn-a')[0]?.holdSince === null);
  const [released] = a.agent.queue.allRecipients();
  assert.ok(released && released.heldMs > 0 && released.holdSince === null, JSON.stringify(released));
  assert.deepEqual(copiedHolds(b.config.dataDir, 'hn-a').map((r) => [r.rcpt, r.heldMs]), [[released.rcpt, released.heldMs]], 'the time held as hn-a counted it');

  // queue hold: the peer must know it is an operator's (a takeover keeps it held until queue release).
  await waitFor('the released recipient deferred by the refusing next hop', () => a.agent.queue.allRecipients()[0]?.state === 'deferred');
  assert.equal(await a.agent.queue.holdWhere(() => true, 'operator', 'held by operator'), 1);
  await waitFor('hn-b knows the operator hold', () => copiedHolds(b.config.dataDir, 'hn-a')[0]?.holdKind === 'operator');
  assert.ok(copiedHolds(b.config.dataDir, 'hn-a')[0]?.holdSince != null);
});
