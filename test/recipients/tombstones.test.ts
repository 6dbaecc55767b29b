// Recipient-list tombstones on a SQLite controller: kept while some agent may still need a removal as a delta,
// collected once every agent has applied it (or it is far behind), and an agent below the collected versions gets
// a snapshot — never a delta that silently lacks a removal.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { openControllerDb } from '../../control/adapters/sqlite/db.js';
import { RouteStore } from '../../control/adapters/sqlite/route-store.js';
import { RecipientStore } from '../../control/adapters/sqlite/recipient-store.js';
import { tempDir } from '../helpers/agent.js';

const removed = (delta: { changes: { address: string; present: boolean }[] }) => delta.changes.filter((c) => !c.present).map((c) => c.address);

test('recipient tombstones: collected up to the oldest agent version, persisted floor, snapshots below it, bounded by retain', () => {
  const dir = tempDir('mxs-tomb-');
  try {
    let db = openControllerDb(dir);
    new RouteStore(db); // creates the audit table
    let store = new RecipientStore(db);
    const rows = () => db.prepare('SELECT count(*) FROM recipients WHERE present = 0').pluck().get() as number;
    store.import('example.com', ['a@example.com', 'b@example.com', 'c@example.com'], { replace: false, actor: 't' }); // v1
    store.edit({ add: [], remove: ['a@example.com'], dropDomains: [], actor: 't' }); // v2
    store.edit({ add: [], remove: ['b@example.com'], dropDomains: [], actor: 't' }); // v3
    assert.deepEqual(removed(store.since(1)), ['a@example.com', 'b@example.com']);
    assert.equal(rows(), 2);

    // One agent at 3, one at 2: only version 2's removal (a) is seen by all of them.
    assert.equal(store.collectTombstones([3, 2]), 1);
    assert.equal(rows(), 1);
    const stale = store.since(1);
    assert.equal(stale.snapshot, true, 'an agent at 1 is below the collected versions: snapshot');
    assert.deepEqual(stale.changes.filter((c) => c.address).map((c) => c.address), ['c@example.com']);
    assert.deepEqual({ snapshot: store.since(2).snapshot, removed: removed(store.since(2)) }, { snapshot: false, removed: ['b@example.com'] });
    assert.equal(store.collectTombstones([3, 2]), 0, 'nothing new to collect');

    // The floor survives a restart of the controller.
    db.close();
    db = openControllerDb(dir);
    store = new RecipientStore(db);
    assert.equal(store.since(1).snapshot, true);
    assert.equal(store.since(2).snapshot, false);

    // Agents with no list yet (0) get a snapshot anyway and hold nothing back; an agent far behind is held to `retain`.
    for (let i = 0; i < 5; i++) store.edit({ add: [`n${i}@example.com`], remove: ['c@example.com', ...(i ? [`n${i - 1}@example.com`] : [])], dropDomains: [], actor: 't' });
    assert.equal(store.version, 8);
    assert.equal(store.collectTombstones([2, 0], 3), 3, 'collected up to version 8 - 3 = 5 although an agent is at 2');
    assert.equal(store.since(4).snapshot, true);
    assert.deepEqual(removed(store.since(5)), ['n1@example.com', 'n2@example.com', 'n3@example.com']);
    assert.ok(store.collectTombstones([0]) > 0);
    assert.equal(rows(), 0);
    db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
