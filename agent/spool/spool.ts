import type Database from 'better-sqlite3';
import { Ballast } from './ballast.js';
import { Batcher } from './batcher.js';
import { Bodies, type DeliveryBody } from './bodies.js';
import { Inspection } from './inspect.js';
import { openReadOnly, openSpoolDb, recoverAtStart, type OpenOptions } from './open.js';
import { Recipients, type RowPick } from './recipients.js';
import { freeDiskBytes, SpaceAccount, STORAGE_HEADROOM } from './space.js';
import { storageError, type ClaimedRecipient, type HoldKind, type MessageRow, type NewMessage, type OutcomeRecord, type RecipientRow } from './types.js';
import { Views, type BreakdownRow, type SpoolStats } from './views.js';

export type { DeliveryBody } from './bodies.js';
export type { Inspection, PageUsage, SpoolCounts } from './inspect.js';
export type { RowPick } from './recipients.js';
export { STORAGE_HEADROOM } from './space.js';
export { newQueueId, PART_BYTES, QueueStorageError } from './types.js';
export type { ClaimedRecipient, HoldKind, MessageRow, NewMessage, Outcome, OutcomeRecord, RecipientRow, RecipientState } from './types.js';
export type { BreakdownRow, SpoolStats, Views } from './views.js';

export interface SpoolOptions extends OpenOptions {
  /** Free space kept for delivery's own writes (see `hasRoomFor`); default STORAGE_HEADROOM. */
  headroomBytes?: number;
  /**
   * Keep a ballast file of the headroom's size in `dataDir` (see Ballast), told when it had to go: the agent
   * that delivers from this queue sets it; a look at the queue from the CLI does not.
   */
  ballast?: { onRelease(bytes: number): void };
}

/**
 * The agent's durable queue, and the only module of the agent that the rest of it imports for storage (the
 * modules beside this file hold the SQL, one job each). Every commit that precedes an SMTP 250 is made with
 * synchronous=FULL in WAL mode, so it has been fsynced when `commit()` resolves.
 *
 * Writes, claims and outcomes return promises, so that the database can move off the event loop (a worker
 * thread) without touching callers. Callers must not rely on anything having happened before the promise
 * settles. The read-only views (stats, listings, a message's body) and the free-space check stay synchronous:
 * in WAL mode they can keep a connection of their own on this thread.
 */
export class Spool {
  /**
   * A look at the queue file under `dataDir` from outside the process that runs it (tests, diagnostics), on a
   * read-only connection: it never writes or checkpoints, so a file a crash left behind stays as it was.
   */
  static readFile<T>(dataDir: string, read: (file: { inspect: Inspection; views: Views }) => T): T {
    const db = openReadOnly(dataDir);
    try {
      return read({ inspect: new Inspection(db), views: new Views(db) });
    } finally {
      db.close();
    }
  }

  /** Counts, integrity and the simulated full disk, for tests and benchmarks. */
  readonly inspect: Inspection;
  private readonly db: Database.Database;
  private readonly space: SpaceAccount;
  private readonly bodies: Bodies;
  private readonly recipients: Recipients;
  private readonly batcher: Batcher;
  private readonly views: Views;

  constructor(
    private readonly dataDir: string,
    opts: SpoolOptions = {},
  ) {
    this.db = openSpoolDb(dataDir, opts);
    const headroom = opts.headroomBytes ?? STORAGE_HEADROOM;
    this.space = new SpaceAccount(dataDir, this.db, headroom, opts.ballast ? new Ballast(dataDir, headroom, opts.ballast.onRelease) : undefined);
    this.bodies = new Bodies(this.db);
    this.recipients = new Recipients(this.db, this.bodies);
    this.batcher = new Batcher(this.db, this.bodies, this.recipients, this.space, (write) => this.drain(write));
    this.views = new Views(this.db);
    this.inspect = new Inspection(this.db);
  }

  /** Whether a message of `size` bytes may still be accepted (see SpaceAccount). */
  hasRoomFor(size: number, now = Date.now()): boolean {
    return this.space.hasRoomFor(size, now);
  }

  /** Free disk space plus the database's free pages: what new mail may still use. */
  availableBytes(): number {
    return this.space.availableBytes();
  }

  /** Free disk space under the data directory (0 where it cannot be measured), for health reports. */
  diskFreeBytes(): number {
    return freeDiskBytes(this.dataDir) ?? 0;
  }

  /** At agent start only: rows a crash left in flight become due again; parts of unfinished messages go. */
  async recoverInFlight(now = Date.now()): Promise<number> {
    return recoverAtStart(this.db, now);
  }

  /** Queues a message; resolves with its id once it is on disk. Concurrent calls share one fsync (group commit). */
  commit(msg: NewMessage): Promise<string> {
    return this.batcher.commit(msg);
  }

  /**
   * Records delivery outcomes in the next group commit, in one transaction with the messages committed in this
   * event-loop turn. Rejects with a QueueStorageError when they could not be written; their rows then stay in flight.
   */
  recordSoon(results: readonly OutcomeRecord[]): Promise<void> {
    return this.batcher.record(results);
  }

  /** Records delivery outcomes now, in one transaction of their own. */
  async record(results: readonly OutcomeRecord[], now = Date.now()): Promise<void> {
    this.drain(() => this.db.transaction(() => this.recipients.applyOutcomes(results, now))());
  }

  /** Takes up to `limit` due recipients, oldest due first, and marks them in flight. */
  async claimDue(now: number, limit: number): Promise<ClaimedRecipient[]> {
    return this.drain(() => this.recipients.claimDue(now, limit));
  }

  /** The message for delivery (a stream of its parts when it is large); undefined when it was removed. */
  async forDelivery(msgId: string): Promise<DeliveryBody | undefined> {
    return this.bodies.forDelivery(msgId);
  }

  /** Writes part `seq` of a message still arriving; the message's commit makes it durable. */
  async stagePart(msgId: string, seq: number, data: Buffer): Promise<void> {
    this.bodies.stagePart(msgId, seq, data);
  }

  /** Removes the staged parts of a message that will not be committed. */
  async dropParts(msgId: string): Promise<void> {
    this.bodies.dropParts(msgId);
  }

  /** Releases held recipients chosen by `pick`; they become due at once and their hold time stops counting. */
  async releaseWhere(pick: RowPick, now = Date.now()): Promise<number> {
    this.batcher.writeRecordsNow();
    return this.recipients.releaseWhere(pick, now);
  }

  /** Puts waiting (queued/deferred) recipients chosen by `pick` on hold. */
  async holdWhere(pick: RowPick, kind: HoldKind, reply: string, now = Date.now()): Promise<number> {
    this.batcher.writeRecordsNow();
    return this.recipients.holdWhere(pick, kind, reply, now);
  }

  /** Makes deferred recipients (all, or those chosen by `pick`) due now. */
  async retryWhere(pick?: RowPick, now = Date.now()): Promise<number> {
    this.batcher.writeRecordsNow();
    return this.recipients.retryWhere(pick, now);
  }

  /** Operator removal of a whole message; false when there is none. */
  async remove(msgId: string): Promise<boolean> {
    return this.recipients.removeMessage(msgId);
  }

  message(msgId: string): MessageRow | undefined {
    return this.views.message(msgId);
  }

  recipientsOf(msgId: string): RecipientRow[] {
    return this.views.recipientsOf(msgId);
  }

  /** Every recipient still in the queue with its message's envelope, oldest message first. */
  allRecipients(limit?: number): ClaimedRecipient[] {
    return this.views.allRecipients(limit);
  }

  stats(): SpoolStats {
    return this.views.stats();
  }

  /** Counts per (domain or routed address, state) with the oldest arrival (see Views.breakdown). */
  breakdown(addresses?: readonly string[]): BreakdownRow[] {
    return this.views.breakdown(addresses);
  }

  /** The whole message (`queue show --body`, bounce headers); one stored in parts is copied part by part. */
  body(msgId: string): Buffer | undefined {
    return this.bodies.whole(msgId);
  }

  /** A write that empties the queue: on a full disk it is tried once more after the ballast has gone. */
  private drain<T>(write: () => T): T {
    try {
      return write();
    } catch (err) {
      if (!storageError(err).full || !this.space.releaseBallast()) throw err;
      return write();
    }
  }

  /** Writes what waits for this turn's group commit, then closes the database. */
  async close(): Promise<void> {
    this.batcher.flush();
    this.db.close();
  }
}
