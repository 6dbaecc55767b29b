import { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import { buffersDone } from '../buffer-garbage.js';
import { unsyncedRunner } from './open.js';
import { bodySize, PART_BYTES, type NewMessage } from './types.js';

/** A message for delivery: whole, or a new stream of its stored parts per call; `head` covers its header section. */
export interface DeliveryBody {
  raw: Buffer | (() => Readable);
  head: Buffer;
}

const EMPTY = Buffer.alloc(0);

/**
 * Writes of message rows and their bytes (tables messages, message_bodies and body_parts), in the writer thread.
 * Every message row has one message_bodies row: its whole body, or for a message over PART_BYTES its first bytes
 * (empty unless staged) with the rest in parts of about PART_BYTES, never whole in memory; messages.size is the
 * real size either way.
 */
export class BodyWrites {
  private readonly stmts;
  private readonly unsynced;

  constructor(db: Database.Database) {
    this.unsynced = unsyncedRunner(db);
    this.stmts = {
      insertMsg: db.prepare('INSERT INTO messages (id, sender, arrived_at, size, dsn) VALUES (?, ?, ?, ?, ?)'),
      insertBody: db.prepare('INSERT INTO message_bodies (msg_id, body) VALUES (?, ?)'),
      deleteBody: db.prepare('DELETE FROM message_bodies WHERE msg_id = ?'),
      insertPart: db.prepare('INSERT INTO body_parts (msg_id, seq, data) VALUES (?, ?, ?)'),
      deleteParts: db.prepare('DELETE FROM body_parts WHERE msg_id = ?'),
      deleteMsgIfDone: db.prepare('DELETE FROM messages WHERE id = ? AND NOT EXISTS (SELECT 1 FROM recipients WHERE msg_id = ?)'),
    };
  }

  /** Writes a message row and, for a large message not staged while it arrived, its parts (inside a transaction). */
  insert(msg: NewMessage, at: number): void {
    const now = msg.arrivedAt ?? at;
    if (msg.staged) {
      const head = Buffer.isBuffer(msg.body) ? msg.body : Buffer.concat(msg.body);
      this.row(msg, now, head.length + msg.staged, head);
      return;
    }
    const size = bodySize(msg.body);
    if (size <= PART_BYTES || Buffer.isBuffer(msg.body)) {
      const body = Buffer.isBuffer(msg.body) ? msg.body : Buffer.concat(msg.body, size);
      this.row(msg, now, size, body);
      return;
    }
    this.row(msg, now, size, EMPTY);
    let seq = 0;
    let group: Buffer[] = [];
    let n = 0;
    for (const piece of msg.body) {
      group.push(piece);
      n += piece.length;
      if (n >= PART_BYTES) {
        this.stmts.insertPart.run(msg.id, seq++, Buffer.concat(group, n));
        group = [];
        n = 0;
      }
    }
    if (n) this.stmts.insertPart.run(msg.id, seq, Buffer.concat(group, n));
  }

  /** The message's row and its (first) bytes. */
  private row(msg: NewMessage, arrivedAt: number, size: number, body: Buffer): void {
    this.stmts.insertMsg.run(msg.id, msg.sender, arrivedAt, size, msg.dsn ? 1 : 0);
    this.stmts.insertBody.run(msg.id, body);
  }

  /**
   * Writes part `seq` of a message still arriving. No fsync of its own: the message's commit (synchronous=FULL)
   * syncs the WAL with these parts before the 250. Parts of a message never committed are removed by
   * `dropParts`, or at the next start.
   */
  stagePart(msgId: string, seq: number, data: Buffer): void {
    this.unsynced(() => this.stmts.insertPart.run(msgId, seq, data));
  }

  dropParts(msgId: string): void {
    this.stmts.deleteParts.run(msgId);
  }

  /** Removes a message row with its parts once it has no recipients left. */
  deleteIfDone(msgId: string): void {
    if (!this.stmts.deleteMsgIfDone.run(msgId, msgId).changes) return;
    this.stmts.deleteBody.run(msgId);
    this.stmts.deleteParts.run(msgId);
  }
}

/**
 * Reads of a message's bytes for delivery and display, on the spool's own connection (beside the writer's: WAL):
 * the only reader of message_bodies and body_parts.
 */
export class BodyReads {
  private readonly stmts;

  constructor(db: Database.Database) {
    this.stmts = {
      body: db.prepare('SELECT b.body, m.size FROM messages m JOIN message_bodies b ON b.msg_id = m.id WHERE m.id = ?'),
      parts: db.prepare('SELECT data FROM body_parts WHERE msg_id = ? ORDER BY seq').pluck(),
      part: db.prepare('SELECT data FROM body_parts WHERE msg_id = ? AND seq = ?').pluck(),
    };
  }

  /**
   * The message for delivery: a small one whole; one stored in parts as a stream that reads one part at a
   * time (a new stream per call, so another MX host can be tried), never the whole message in memory.
   */
  forDelivery(msgId: string): DeliveryBody | undefined {
    const row = this.stmts.body.get(msgId) as { body: Buffer; size: number } | undefined;
    if (!row) return undefined;
    if (row.size <= row.body.length) return { raw: row.body, head: row.body };
    const part = (seq: number) => this.stmts.part.get(msgId, seq) as Buffer | undefined;
    const { size, body: first } = row;
    const stream = () => {
      let seq = 0;
      let sent = 0;
      return new Readable({
        read() {
          if (sent === 0 && first.length) {
            sent = first.length;
            return void this.push(first);
          }
          if (sent >= size) return void this.push(null);
          const data = part(seq++);
          // Removed meanwhile: fail the transaction rather than send a truncated message.
          if (!data) return void this.destroy(new Error(`message ${msgId} lost its part ${seq - 1}`));
          sent += data.length;
          // the part before this one is on its way out by now
          buffersDone(data.length);
          this.push(data);
        },
      });
    };
    return { raw: stream, head: Buffer.concat([first, part(0) ?? EMPTY]) };
  }

  /** The whole message; one stored in parts is copied into one buffer part by part. */
  whole(msgId: string): Buffer | undefined {
    const row = this.stmts.body.get(msgId) as { body: Buffer; size: number } | undefined;
    if (!row || row.size <= row.body.length) return row?.body;
    const out = Buffer.allocUnsafe(row.size);
    let at = row.body.copy(out, 0);
    for (const part of this.stmts.parts.iterate(msgId) as IterableIterator<Buffer>) at += part.copy(out, at);
    return out.subarray(0, at);
  }
}
