import type Database from 'better-sqlite3';
import { Ballast } from './ballast.js';
import { Batcher } from './batcher.js';
import { BodyReads, type DeliveryBody } from './bodies.js';
import { FreshBodies } from './fresh-bodies.js';
import { Inspection } from './inspect.js';
import { openReadOnly, openSpoolDb, type OpenOptions } from './open.js';
import { pickRows, touched, type BulkChange, type RowPick, type Touched } from './recipients.js';
import { freeDiskBytes, SpaceAccount, STORAGE_HEADROOM } from './space.js';
import { outcomeWrite, PART_BYTES, QueueStorageError, type ClaimedRecipient, type HoldKind, type MessageRow, type NewMessage, type OutcomeRecord, type RecipientRow } from './types.js';
import { Views, type BreakdownRow, type SpoolStats } from './views.js';
import { ShadowViews, type ShadowBatchRows, type ShadowHoldNoticeRow } from './shadow-tables.js';
import { ownCopy } from './wire.js';
import { WriterClient } from './writer-client.js';

export type { DeliveryBody } from './bodies.js';
export type { Inspection, PageUsage, SpoolCounts } from './inspect.js';
export type { BulkChange, RowPick, Touched } from './recipients.js';
export { STORAGE_HEADROOM } from './space.js';
export { newQueueId, PART_BYTES, QueueStorageError } from './types.js';
export type { ClaimedRecipient, HoldKind, MessageRow, NewMessage, Outcome, OutcomeRecord, RecipientRow, RecipientState } from './types.js';
export type { BreakdownRow, SpoolStats, Views } from './views.js';
export type { ShadowBatchRows, ShadowCopyRow, ShadowDiscardRow, ShadowHoldNoticeRow, ShadowHoldRow, ShadowListing } from './shadow-tables.js';

/** Recipients that left the queue (delivered, bounced, removed): what a shadow peer's discard notice carries. */
export interface GoneRecipients {
  msgId: string;
  rcpts: string[];
}

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
 * modules beside this file hold the SQL, one job each). Every write goes to a writer thread (writer.ts) with a
 * connection of its own, so that no fsync stalls this event loop; every commit that precedes an SMTP 250 is made
 * with synchronous=FULL in WAL mode, so it has been fsynced when `commit()` resolves.
 *
 * Writes, claims and outcomes return promises that settle once the writer thread has committed them; callers
 * must not rely on anything having happened before. The read-only views (stats, listings, a message's body) and
 * the free-space check stay synchronous, on this thread's own connection: in WAL mode it reads what the writer
 * committed last, never a half-written transaction.
 */
export class Spool {
  /**
   * A look at the queue file under `dataDir` from outside the process that runs it (tests, diagnostics), on a
   * read-only connection: it never writes or checkpoints, so a file a crash left behind stays as it was.
   */
  static readFile<T>(dataDir: string, read: (file: { inspect: Inspection; views: Views; shadow: ShadowViews }) => T): T {
    const db = openReadOnly(dataDir);
    try {
      return read({ inspect: new Inspection(db), views: new Views(db), shadow: new ShadowViews(db) });
    } finally {
      db.close();
    }
  }

  /** Counts, integrity and the simulated full disk, for tests and benchmarks. */
  readonly inspect: Inspection;
  /** This thread's connection: it opens (and checks) the file, and reads. */
  private readonly db: Database.Database;
  private readonly writer: WriterClient;
  private readonly space: SpaceAccount;
  private readonly bodies: BodyReads;
  /** Bodies committed and not yet sent: most are delivered at once, and then never read back. */
  private readonly fresh = new FreshBodies(16 * 1024 * 1024, PART_BYTES);
  private readonly batcher: Batcher;
  private readonly views: Views;
  /** The shadow tables, read on this thread. */
  readonly shadowViews: ShadowViews;
  /** Told after recipients left the queue for good (shadow redundancy sends the peer a discard notice). */
  onGone: ((gone: readonly GoneRecipients[]) => void) | undefined;
  /** Told after recipients were put on hold or released, with their hold state now (for the shadow peer). */
  onHolds: ((changed: readonly ShadowHoldNoticeRow[]) => void) | undefined;

  constructor(
    private readonly dataDir: string,
    opts: SpoolOptions = {},
  ) {
    this.db = openSpoolDb(dataDir, opts);
    this.writer = new WriterClient({ dataDir, ...(opts.maxPages ? { maxPages: opts.maxPages } : {}) });
    const headroom = opts.headroomBytes ?? STORAGE_HEADROOM;
    this.space = new SpaceAccount(dataDir, this.db, headroom, opts.ballast ? new Ballast(dataDir, headroom, opts.ballast.onRelease) : undefined);
    this.bodies = new BodyReads(this.db);
    this.batcher = new Batcher(this.writer, this.space, (write) => this.drain(write));
    this.views = new Views(this.db);
    this.shadowViews = new ShadowViews(this.db);
    this.inspect = new Inspection(this.db, (max) => this.writer.limitPages(max));
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
  recoverInFlight(now = Date.now()): Promise<number> {
    return this.writer.call('recover', [now]);
  }

  /**
   * Queues a message; resolves with its id once it is on disk. Calls made while the writer syncs share the next
   * fsync (group commit). The writer gets a copy of the body; a body in one Buffer may be kept for its first
   * delivery, so it must not change after the commit.
   */
  async commit(msg: NewMessage): Promise<string> {
    const id = await this.batcher.commit(msg);
    if (Buffer.isBuffer(msg.body) && !msg.staged) this.fresh.keep(id, msg.body);
    return id;
  }

  /**
   * Records delivery outcomes in the next group commit, in one transaction with the messages committed with it.
   * Rejects with a QueueStorageError when they could not be written; their rows then stay in flight.
   */
  recordSoon(results: readonly OutcomeRecord[]): Promise<void> {
    return this.batcher.record(results.map(outcomeWrite)).then(() => this.told(results));
  }

  /** Records delivery outcomes now, in one transaction of their own. */
  async record(results: readonly OutcomeRecord[], now = Date.now()): Promise<void> {
    const outcomes = results.map(outcomeWrite);
    await this.drain(() => this.writer.call('write', [[], outcomes, now]));
    this.told(results);
  }

  /** Delivered and bounced recipients, and those a held route held, to whoever listens (onGone, onHolds). */
  private told(results: readonly OutcomeRecord[]): void {
    const left = results.filter((r) => r.outcome.kind === 'delivered' || r.outcome.kind === 'bounced');
    if (left.length) this.onGone?.(left.map((r) => ({ msgId: r.row.msgId, rcpts: [r.row.rcpt] })));
    this.holdsChanged(results.filter((r) => r.outcome.kind === 'held').map((r) => r.row.id));
  }

  /** Hold states of these rows as written, to onHolds (read back: the writer re-checked which rows changed). */
  private holdsChanged(rowIds: readonly number[]): void {
    if (this.onHolds && rowIds.length) this.onHolds(this.shadowViews.holdStates(rowIds));
  }

  /**
   * Clients' shadow copies and discard notices in one transaction; resolves once they are durable, with the ids
   * of large copies per batch that were not kept (their parts were not all staged).
   */
  shadowStore(batches: readonly ShadowBatchRows[]): Promise<string[][]> {
    const rows = batches.map((b) => ({ ...b, copies: b.copies.map((c) => ({ ...c, body: ownCopy(c.body) })) }));
    return this.writer.call('shadowStore', [rows, Date.now()], rows.flatMap((b) => b.copies.map((c) => c.body.buffer as ArrayBuffer)));
  }

  /** Part `seq` of a client's large copy still arriving (a copy of `data`; no fsync: the copy's commit syncs it). */
  shadowStagePart(origin: string, id: string, xfer: number, seq: number, data: Uint8Array): Promise<void> {
    const copy = ownCopy(data);
    return this.writer.call('shadowStagePart', [origin, id, xfer, seq, copy], [copy.buffer as ArrayBuffer]);
  }

  /** The staged parts of a client's transfer whose copy will not come. */
  shadowDropStaged(origin: string, id: string, xfer: number): Promise<void> {
    return this.writer.call('shadowDropStaged', [origin, id, xfer]);
  }

  /**
   * A message's bytes for its shadow copy: whole when small, else a new stream of its stored parts per call (the
   * reads delivery uses, never the whole message in memory); not the body kept for the first delivery.
   */
  bodyForCopy(msgId: string): DeliveryBody | undefined {
    return this.bodies.forDelivery(msgId);
  }

  /** Messages accepted without a shadow copy; resolves once that is durable. */
  shadowMarkUnconfirmed(ids: readonly string[]): Promise<void> {
    return this.writer.call('shadowMarkUnconfirmed', [ids]);
  }

  /** The peer holds these messages' copies durably. */
  shadowConfirm(ids: readonly string[]): Promise<void> {
    return this.writer.call('shadowConfirm', [ids]);
  }

  /** A new peer: every queued message is to be copied again. Resolves with how many wait for a copy. */
  shadowUnconfirmAll(): Promise<number> {
    return this.writer.call('shadowUnconfirmAll', []);
  }

  /** Takeover: the copies kept for `origin` join this queue. */
  shadowAdopt(origin: string): Promise<{ messages: number; recipients: number }> {
    return this.writer.call('shadowAdopt', [origin, Date.now()]);
  }

  /** Forgets the copies kept for an agent that is no longer a client here. */
  shadowDropOrigin(origin: string): Promise<number> {
    return this.writer.call('shadowDropOrigin', [origin]);
  }

  /** This agent was taken over: the messages its peer had (and now delivers) leave the queue. */
  async shadowDropTakenOver(version: number): Promise<number> {
    await this.batcher.settled();
    return this.writer.call('shadowDropTakenOver', [version, Date.now()]);
  }

  /** Takes up to `limit` due recipients, oldest due first, and marks them in flight. */
  claimDue(now: number, limit: number): Promise<ClaimedRecipient[]> {
    return this.drain(() => this.writer.call('claim', [now, limit]));
  }

  /**
   * The message for delivery (a stream of its parts when it is large); undefined when it was removed (or, for a
   * message whose first attempt this is, removed by another process after it was claimed).
   */
  async forDelivery(msgId: string): Promise<DeliveryBody | undefined> {
    const fresh = this.fresh.take(msgId);
    return fresh ? { raw: fresh, head: fresh } : this.bodies.forDelivery(msgId);
  }

  /** Writes part `seq` of a message still arriving (a copy of `data`); the message's commit makes it durable. */
  stagePart(msgId: string, seq: number, data: Buffer): Promise<void> {
    const copy = ownCopy(data);
    return this.writer.call('stagePart', [msgId, seq, copy], [copy.buffer as ArrayBuffer]);
  }

  /** Removes the staged parts of a message that will not be committed. */
  dropParts(msgId: string): Promise<void> {
    return this.writer.call('dropParts', [msgId]);
  }

  /** Releases held recipients chosen by `pick`; they become due at once and their hold time stops counting. */
  async releaseWhere(pick: RowPick, now = Date.now()): Promise<number> {
    return (await this.change({ kind: 'release' }, pick, { now })).recipients;
  }

  /** Puts waiting (queued/deferred) recipients chosen by `pick` on hold. */
  async holdWhere(pick: RowPick, kind: HoldKind, reply: string, now = Date.now()): Promise<number> {
    return (await this.change({ kind: 'hold', holdKind: kind, reply }, pick, { now })).recipients;
  }

  /** Makes deferred recipients (all, or those chosen by `pick`) due now. */
  async retryWhere(pick?: RowPick, now = Date.now()): Promise<number> {
    if (pick) return (await this.change({ kind: 'retry' }, pick, { now })).recipients;
    await this.batcher.settled();
    return this.writer.call('retryAll', [now]);
  }

  /**
   * An operator's bulk change (queue hold|release|retry|rm with a selection): what it changed, or with `dryRun`
   * what it would change now, changing nothing.
   */
  bulk(change: BulkChange, pick: RowPick, opts: { dryRun?: boolean; now?: number; msgId?: string } = {}): Promise<Touched> {
    return this.change(change, pick, { now: opts.now ?? Date.now(), ...opts });
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

  /** Views.groupCounts, Views.oldestOf and Views.lastRecipientId: the breakdown of a large queue in slices. */
  get breakdownSlices(): Pick<Views, 'groupCounts' | 'oldestOf' | 'lastRecipientId'> {
    return this.views;
  }

  /** The whole message (`queue show --body`, bounce headers); one stored in parts is copied part by part. */
  body(msgId: string): Buffer | undefined {
    return this.bodies.whole(msgId);
  }

  /**
   * A bulk change of the rows `pick` chooses, decided on the states after the outcomes still waiting have been
   * written (see Batcher.settled); rows picked here are changed only if the change still applies to them there.
   */
  private async change(change: BulkChange, pick: RowPick, { now, dryRun = false, msgId }: { now: number; dryRun?: boolean; msgId?: string }): Promise<Touched> {
    await this.batcher.settled();
    const rows = pickRows(this.db, change.kind, pick, now, msgId);
    if (dryRun || !rows.length) return touched(dryRun ? rows : []);
    const before = change.kind === 'remove' && this.onGone ? new Map([...new Set(rows.map((r) => r.msgId))].map((m) => [m, this.views.recipientsOf(m).map((r) => r.rcpt)])) : undefined;
    const done = await this.writer.call('change', [change, rows.map((r) => r.id), now]);
    if (change.kind === 'hold' || change.kind === 'release') this.holdsChanged(rows.map((r) => r.id));
    // A removed message's body kept for its first delivery would otherwise wait in memory for its eviction.
    if (change.kind === 'remove') for (const { msgId } of rows) if (!this.views.message(msgId)) this.fresh.forget(msgId);
    if (before) {
      const gone = [...before].map(([msgId, rcpts]) => {
        const still = new Set(this.views.recipientsOf(msgId).map((r) => r.rcpt));
        return { msgId, rcpts: rcpts.filter((r) => !still.has(r)) };
      });
      this.onGone!(gone.filter((g) => g.rcpts.length));
    }
    return done;
  }

  /** A write that empties the queue: on a full disk it is tried once more after the ballast has gone. */
  private async drain<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      if (!(err instanceof QueueStorageError && err.full) || !this.space.releaseBallast()) throw err;
      return write();
    }
  }

  /** Writes what waits for a group commit, ends the writer thread, then closes this thread's connection. */
  async close(): Promise<void> {
    await this.batcher.settled();
    await this.writer.close();
    this.db.close();
  }
}
