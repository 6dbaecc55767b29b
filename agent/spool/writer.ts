import type Database from 'better-sqlite3';
import { buffersDone } from '../buffer-garbage.js';
import { BodyWrites } from './bodies.js';
import { setPageLimit } from './inspect.js';
import { openSpoolDb, recoverAtStart } from './open.js';
import { RecipientWrites, type BulkChange, type Touched } from './recipients.js';
import { ShadowWrites, type ShadowBatchRows } from './shadow-tables.js';
import type { ClaimedRecipient, OutcomeWrite } from './types.js';
import { bufferFromWire, messageFromWire, type WireMessage } from './wire.js';

/** What the writer thread opens the queue with (its workerData). */
export interface WriterOptions {
  dataDir: string;
  maxPages?: number;
}

/**
 * Every write to the queue, on a connection of its own. The spool runs this in a worker thread (writer-thread.ts)
 * so that a commit's fsync never stalls the event loop that answers SMTP; it gets the writes one after another,
 * in the order they were sent. A method returns once its transaction has committed: with synchronous=FULL
 * (open.ts) that is after the fsync, except for the writes that say they need none.
 */
export class Writer {
  private readonly db: Database.Database;
  private readonly bodies: BodyWrites;
  private readonly recipients: RecipientWrites;
  private readonly shadow: ShadowWrites;

  constructor(opts: WriterOptions) {
    // The spool's own thread opened (and checked) the file already.
    this.db = openSpoolDb(opts.dataDir, { mustExist: true, skipCheck: true, ...(opts.maxPages ? { maxPages: opts.maxPages } : {}) });
    this.bodies = new BodyWrites(this.db);
    this.recipients = new RecipientWrites(this.db, this.bodies);
    this.shadow = new ShadowWrites(this.db, this.bodies, this.recipients);
  }

  /** New messages and delivery outcomes in one transaction: one fsync for all of them (group commit). */
  write(messages: readonly WireMessage[], outcomes: readonly OutcomeWrite[], now: number): void {
    this.db.transaction(() => {
      for (const wire of messages) {
        const msg = messageFromWire(wire);
        this.bodies.insert(msg, now);
        this.recipients.insert(msg.id, msg.recipients, now);
      }
      this.recipients.applyOutcomes(outcomes, now);
    })();
  }

  claim(now: number, limit: number): ClaimedRecipient[] {
    return this.recipients.claimDue(now, limit);
  }

  stagePart(msgId: string, seq: number, data: Uint8Array): void {
    this.bodies.stagePart(msgId, seq, bufferFromWire(data));
    buffersDone(data.length);
  }

  dropParts(msgId: string): void {
    this.bodies.dropParts(msgId);
  }

  change(change: BulkChange, ids: readonly number[], now: number): Touched {
    return this.recipients.change(change, ids, now);
  }

  retryAll(now: number): number {
    return this.recipients.retryAll(now);
  }

  recover(now: number): number {
    const rows = recoverAtStart(this.db, now);
    this.shadow.dropStrayParts();
    return rows;
  }

  /**
   * Clients' shadow copies and discard notices, one transaction (durable on return): the peer's group commit.
   * Per batch, the large copies not kept (parts missing).
   */
  shadowStore(batches: readonly ShadowBatchRows[], now: number): string[][] {
    return this.shadow.store(batches, now);
  }

  shadowStagePart(origin: string, id: string, xfer: number, seq: number, data: Uint8Array): void {
    this.shadow.stagePart(origin, id, xfer, seq, bufferFromWire(data));
    buffersDone(data.length);
  }

  shadowDropStaged(origin: string, id: string, xfer: number): void {
    this.shadow.dropStaged(origin, id, xfer);
  }

  shadowMarkUnconfirmed(ids: readonly string[]): void {
    this.shadow.markUnconfirmed(ids);
  }

  shadowConfirm(ids: readonly string[]): void {
    this.shadow.confirm(ids);
  }

  shadowUnconfirmAll(): number {
    return this.shadow.unconfirmAll();
  }

  shadowAdopt(origin: string, now: number): { messages: number; recipients: number } {
    return this.shadow.adopt(origin, now);
  }

  shadowDropOrigin(origin: string): number {
    return this.shadow.dropOrigin(origin);
  }

  shadowDropTakenOver(version: number, now: number): number {
    return this.shadow.dropTakenOver(version, now);
  }

  limitPages(max: number): void {
    setPageLimit(this.db, max);
  }

  close(): void {
    this.db.close();
  }
}

/** The name of a Writer method: what the spool's thread asks the writer thread to run. */
export type WriteOp = keyof Writer;

export interface WriteRequest {
  id: number;
  op: WriteOp;
  args: unknown[];
}

/** The answer to a WriteRequest: the method's value, or its error as a QueueStorageError's fields. */
export type WriteReply = { id: number; value: unknown } | { id: number; error: { full: boolean; message: string } };
