import type Database from 'better-sqlite3';
import type { Bodies } from './bodies.js';
import type { Recipients } from './recipients.js';
import type { SpaceAccount } from './space.js';
import { bodySize, storageError, type NewMessage, type OutcomeRecord } from './types.js';

type PendingCommit = { msg: NewMessage; resolve: (id: string) => void; reject: (e: Error) => void };
type PendingRecord = { results: readonly OutcomeRecord[]; resolve: () => void; reject: (e: Error) => void };

/**
 * Group commit: new messages and delivery outcomes handed over in one event-loop turn are written in one
 * transaction (synchronous=FULL, so one fsync for all of them), and each promise settles once its part is on
 * disk. Nothing resolves before the transaction that holds it has committed.
 */
export class Batcher {
  private commits: PendingCommit[] = [];
  private records: PendingRecord[] = [];
  private scheduled = false;

  constructor(
    private readonly db: Database.Database,
    private readonly bodies: Bodies,
    private readonly recipients: Recipients,
    private readonly space: SpaceAccount,
    /** Runs a write that only empties the queue (outcomes without new mail): it may use the ballast. */
    private readonly drain: <T>(write: () => T) => T,
  ) {}

  /** Queues a message; resolves with its id once it is on disk. */
  commit(msg: NewMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      this.commits.push({ msg, resolve, reject });
      this.schedule();
    });
  }

  /** Records delivery outcomes with the next group commit; rejects with a QueueStorageError when they could not be written. */
  record(results: readonly OutcomeRecord[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.records.push({ results, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Writes outcomes still waiting for the group commit now: a release (or retry) decided on states without them
   * would miss a row whose 'held' outcome is written just after it, and that row would stay held for good.
   */
  writeRecordsNow(): void {
    if (this.records.length) this.flush();
  }

  /** Writes everything still waiting (before the database closes). */
  flush(): void {
    this.scheduled = false;
    const commits = this.commits;
    const records = this.records;
    this.commits = [];
    this.records = [];
    const now = Date.now();
    // Together when that works; apart after a failure, so that new mail the disk has no room for does not keep
    // delivered mail from leaving the queue (and the reverse).
    if (commits.length && records.length && this.write(commits, records, now, false)) return;
    if (records.length) this.write([], records, now, true);
    if (commits.length) this.write(commits, [], now, true);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      if (this.scheduled) this.flush();
    });
  }

  private write(commits: PendingCommit[], records: PendingRecord[], now: number, report: boolean): boolean {
    const run = this.db.transaction(() => {
      for (const { msg } of commits) {
        this.bodies.insert(msg, now);
        this.recipients.insert(msg.id, msg.recipients, now);
      }
      for (const r of records) this.recipients.applyOutcomes(r.results, now);
    });
    try {
      if (commits.length) run();
      else this.drain(run);
    } catch (err) {
      if (report) {
        const e = storageError(err);
        for (const p of [...commits, ...records]) p.reject(e);
      }
      return false;
    }
    this.space.took(commits.reduce((n, p) => n + bodySize(p.msg.body), 0));
    for (const p of commits) p.resolve(p.msg.id);
    for (const r of records) r.resolve();
    return true;
  }
}
