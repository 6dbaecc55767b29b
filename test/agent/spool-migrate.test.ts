import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { migrateInlineBodies } from '../../agent/spool/migrate-bodies.js';
import { PART_BYTES, Spool } from '../../agent/spool/spool.js';
import { tempDir } from '../helpers/agent.js';

/** The queue schema before issue 14: each body inline in its messages row (copied here, not imported: it is gone). */
const OLD_SCHEMA = `
CREATE TABLE messages (
  id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  arrived_at INTEGER NOT NULL,
  size INTEGER NOT NULL,
  dsn INTEGER NOT NULL DEFAULT 0,
  body BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE recipients (
  id INTEGER PRIMARY KEY,
  msg_id TEXT NOT NULL REFERENCES messages(id),
  rcpt TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  due_at INTEGER,
  last_reply TEXT,
  route TEXT,
  hold_kind TEXT,
  hold_since INTEGER,
  held_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX recipients_due ON recipients(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX recipients_msg ON recipients(msg_id);
CREATE INDEX recipients_state ON recipients(state);
CREATE INDEX messages_arrived ON messages(arrived_at);
CREATE TABLE body_parts (
  msg_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (msg_id, seq)
) WITHOUT ROWID;
`;

interface OldMessage {
  id: string;
  rcpts: string[];
  /** What the old schema kept inline: the whole body, or a large message's head (empty unless it was staged). */
  inline: Buffer;
  parts: Buffer[];
}

/** Distinct bytes per message, so a body read back under the wrong id fails too. */
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) % 256));

const OLD: OldMessage[] = [
  { id: 'OLD1', rcpts: ['a@example.com', 'b@example.com'], inline: bytes(4096, 1), parts: [] },
  { id: 'OLD2', rcpts: ['c@example.com'], inline: Buffer.concat([Buffer.from('Subject: x\r\n\r\n'), bytes(100, 2)]), parts: [] },
  { id: 'OLD3', rcpts: ['d@example.com'], inline: Buffer.alloc(0), parts: [bytes(PART_BYTES, 3), bytes(PART_BYTES, 4), bytes(1000, 5)] },
  { id: 'OLD4', rcpts: ['e@example.com'], inline: bytes(5000, 6), parts: [bytes(PART_BYTES, 7), bytes(10, 8)] },
  { id: 'OLD5', rcpts: ['f@example.com'], inline: bytes(1, 9), parts: [] },
];
const whole = (m: OldMessage) => Buffer.concat([m.inline, ...m.parts]);
const RCPTS = OLD.reduce((n, m) => n + m.rcpts.length, 0);
const PARTS = OLD.reduce((n, m) => n + m.parts.length, 0);

/** A queue.db as an agent before issue 14 left it: every recipient queued, due now. */
function writeOldQueue(dataDir: string, now: number): void {
  mkdirSync(dataDir, { recursive: true });
  const db = new Database(join(dataDir, 'queue.db'));
  db.pragma('journal_mode = WAL');
  db.exec(OLD_SCHEMA);
  const msg = db.prepare('INSERT INTO messages (id, sender, arrived_at, size, dsn, body) VALUES (?, ?, ?, ?, 0, ?)');
  const part = db.prepare('INSERT INTO body_parts (msg_id, seq, data) VALUES (?, ?, ?)');
  const rcpt = db.prepare("INSERT INTO recipients (msg_id, rcpt, state, due_at) VALUES (?, ?, 'queued', ?)");
  for (const m of OLD) {
    msg.run(m.id, `s-${m.id}@sender.test`, now - 1000, whole(m).length, m.inline);
    m.parts.forEach((p, seq) => part.run(m.id, seq, p));
    for (const r of m.rcpts) rcpt.run(m.id, r, now);
  }
  db.close();
}

async function readAll(stream: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of stream) out.push(c as Buffer);
  return Buffer.concat(out);
}

/** Opens the queue as the agent does, and checks that every old message is there, read and delivered byte for byte. */
async function deliverAll(dataDir: string, now: number): Promise<void> {
  const q = new Spool(dataDir);
  try {
    assert.equal(q.inspect.integrityCheck(), 'ok');
    assert.deepEqual(q.inspect.counts(), { messages: OLD.length, recipients: RCPTS, bodyParts: PARTS });
    for (const m of OLD) {
      assert.ok(q.body(m.id)!.equals(whole(m)), `${m.id}: body`);
      assert.equal(q.message(m.id)!.size, whole(m).length);
    }
    const rows = await q.claimDue(now + 1, 100);
    assert.equal(rows.length, RCPTS);
    for (const m of OLD) {
      const d = (await q.forDelivery(m.id))!;
      const sent = typeof d.raw === 'function' ? await readAll(d.raw()) : d.raw;
      assert.ok(sent.equals(whole(m)), `${m.id}: delivered bytes`);
      assert.equal(rows.find((r) => r.msgId === m.id)!.sender, `s-${m.id}@sender.test`);
    }
    await q.record(rows.map((row) => ({ row, route: 'example.com', outcome: { kind: 'delivered' as const, reply: '250 ok' } })));
    assert.deepEqual(q.inspect.counts(), { messages: 0, recipients: 0, bodyParts: 0 });
  } finally {
    await q.close();
  }
  const left = new Database(join(dataDir, 'queue.db'), { readonly: true });
  try {
    assert.equal(left.prepare('SELECT COUNT(*) FROM message_bodies').pluck().get(), 0, 'bodies leave with their messages');
    const columns = left.prepare("SELECT name FROM pragma_table_info('messages')").pluck().all();
    assert.ok(!columns.includes('body'), 'the inline column is gone');
  } finally {
    left.close();
  }
}

test('spool migration: a queue.db with bodies inline opens, and its messages are read and delivered byte for byte', async () => {
  const dir = tempDir('mxs-migrate-');
  try {
    const now = Date.now();
    writeOldQueue(dir, now);
    await deliverAll(dir, now);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spool migration: a crash in the middle of it loses nothing; the next open finishes it', async () => {
  const dir = tempDir('mxs-migrate-crash-');
  try {
    const now = Date.now();
    writeOldQueue(dir, now);
    const db = new Database(join(dir, 'queue.db'));
    try {
      db.exec('CREATE TABLE message_bodies (msg_id TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID');
      // The second batch fails in its middle, as a crash there would stop it: its transaction is rolled back,
      // the first batch (2 messages) stays committed.
      db.exec("CREATE TEMP TRIGGER crash BEFORE INSERT ON message_bodies WHEN (SELECT COUNT(*) FROM message_bodies) >= 3 BEGIN SELECT RAISE(ABORT, 'crash'); END");
      assert.throws(() => migrateInlineBodies(db, 2), /crash/);
      assert.equal(db.prepare('SELECT COUNT(*) FROM message_bodies').pluck().get(), 2);
    } finally {
      db.close();
    }
    await deliverAll(dir, now);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
