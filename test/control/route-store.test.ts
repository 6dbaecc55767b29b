import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { openControllerDb } from '../../control/adapters/sqlite/db.js';
import { RouteStore } from '../../control/adapters/sqlite/route-store.js';
import { MxError } from '../../shared/errors.js';
import { tempDir } from '../helpers/agent.js';

function open(dir: string) {
  const db = openControllerDb(dir);
  return { db, store: new RouteStore(db) };
}

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    return err instanceof MxError ? err.code : `untyped: ${String(err)}`;
  }
  return 'no error';
};

test('route store: every change is a new version, CAS on expected_version, audit old -> new', (t) => {
  const dir = tempDir('mxs-store-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { db, store } = open(dir);
  t.after(() => db.close());
  assert.equal(store.version, 0);
  const versions: number[] = [];
  store.on('change', (s) => versions.push(s.version));

  assert.equal(store.set({ match: 'Example.COM', target: 'smtp:[192.0.2.1]:25' }, { actor: 'alice' }), 1);
  assert.deepEqual(store.snapshot().routes, [{ match: 'example.com', target: 'smtp:[192.0.2.1]:25' }]);
  assert.equal(store.setHold('example.com', true, { actor: 'bob', expectedVersion: 1 }), 2);
  assert.equal(store.get('example.com')?.hold, true);
  // A stale expected_version is refused and changes nothing.
  assert.equal(code(() => store.set({ match: 'example.com', target: 'smtp:[192.0.2.2]:25' }, { expectedVersion: 1 })), 'VERSION_CONFLICT');
  assert.equal(store.version, 2);
  assert.equal(store.setHold('example.com', false, { expectedVersion: 2 }), 3);
  assert.equal(store.set({ match: '.example.org', target: 'smtp:mx.example.org:2525', tls: 'required' }), 4);
  assert.equal(store.remove('example.com', { actor: 'carol' }), 5);
  assert.deepEqual(versions, [1, 2, 3, 4, 5]);

  const audit = store.audit();
  assert.deepEqual(
    audit.map((a) => [a.version, a.action, a.match, a.actor]),
    [
      [5, 'remove', 'example.com', 'carol'],
      [4, 'set', '.example.org', 'unknown'],
      [3, 'release', 'example.com', 'unknown'],
      [2, 'hold', 'example.com', 'bob'],
      [1, 'set', 'example.com', 'alice'],
    ],
  );
  assert.equal(audit[0]!.new, null);
  assert.deepEqual(audit[0]!.old, { match: 'example.com', target: 'smtp:[192.0.2.1]:25' });
  assert.deepEqual(audit[3]!.new, { match: 'example.com', target: 'smtp:[192.0.2.1]:25', hold: true });
});

test('route store: invalid input is INVALID_ARGUMENT with the reason; unknown route NOT_FOUND', (t) => {
  const dir = tempDir('mxs-store-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { db, store } = open(dir);
  t.after(() => db.close());
  assert.throws(() => store.set({ match: 'example.com', target: 'smtp:192.0.2.1:25' }), (e: MxError) => e.code === 'INVALID_ARGUMENT' && /needs brackets/.test(e.message));
  assert.throws(() => store.set({ match: 'not a domain', target: 'smtp:[192.0.2.1]:25' }), (e: MxError) => e.code === 'INVALID_ARGUMENT' && /not a domain|not an address/.test(e.message));
  assert.throws(() => store.set({ match: 'example.com', target: 'lmtp:x' }), (e: MxError) => e.code === 'INVALID_ARGUMENT' && /smtp:\[host\]:port/.test(e.message));
  assert.equal(code(() => store.remove('example.com')), 'NOT_FOUND');
  assert.equal(code(() => store.setHold('example.com', true)), 'NOT_FOUND');
  assert.equal(store.version, 0, 'refused writes do not consume versions');
  assert.equal(store.audit().length, 0);
});

test('route store: version and table survive a restart and keep increasing', (t) => {
  const dir = tempDir('mxs-store-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let { db, store } = open(dir);
  store.set({ match: 'example.com', target: 'smtp:[192.0.2.1]:25' });
  store.set({ match: 'example.net', target: 'smtp:[192.0.2.1]:25' });
  store.remove('example.net');
  db.close();
  ({ db, store } = open(dir));
  t.after(() => db.close());
  assert.equal(store.version, 3);
  assert.deepEqual(store.snapshot().routes.map((r) => r.match), ['example.com']);
  // Removing everything does not reset the version either.
  assert.equal(store.remove('example.com'), 4);
  assert.equal(store.set({ match: 'example.com', target: 'smtp:[192.0.2.9]:25' }), 5);
  assert.equal(store.audit().length, 5);
  // An agent that reports a higher version (database restored from a backup) pushes the next version above it.
  store.raiseVersionFloor(40);
  assert.equal(store.version, 5);
  assert.equal(store.setHold('example.com', true), 41);
});

test('route store: a controller.db from before route verification gains the verify column and keeps its routes', (t) => {
  const dir = tempDir('mxs-store-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const old = openControllerDb(dir);
  old.exec(`CREATE TABLE routes (match TEXT PRIMARY KEY, target TEXT NOT NULL, hold INTEGER NOT NULL DEFAULT 0, tls TEXT,
    version INTEGER NOT NULL, updated_at INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO routes VALUES ('example.com', 'smtp:[192.0.2.1]:25', 1, 'required', 3, 0);
    INSERT INTO meta VALUES ('version', 3);`);
  old.close();
  const { db, store } = open(dir);
  t.after(() => db.close());
  assert.deepEqual(store.snapshot(), { version: 3, routes: [{ match: 'example.com', target: 'smtp:[192.0.2.1]:25', hold: true, tls: 'required' }] });
  store.set({ match: 'example.org', target: 'smtp:[192.0.2.2]:25', verify: 'probe' });
  const reopened = open(dir);
  t.after(() => reopened.db.close());
  assert.deepEqual(reopened.store.snapshot().routes.find((r) => r.match === 'example.org'), { match: 'example.org', target: 'smtp:[192.0.2.2]:25', verify: 'probe' });
});
