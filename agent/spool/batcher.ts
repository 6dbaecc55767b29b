import type { SpaceAccount } from './space.js';
import { bodySize, type NewMessage, type OutcomeWrite } from './types.js';
import { messageToWire } from './wire.js';
import type { WriterClient } from './writer-client.js';

type PendingCommit = { msg: NewMessage; resolve: (id: string) => void; reject: (e: Error) => void };
type PendingRecord = { results: readonly OutcomeWrite[]; resolve: () => void; reject: (e: Error) => void };

/**
 * Group commit: new messages and delivery outcomes are written in one transaction (synchronous=FULL, so one
 * fsync for all of them), and each promise settles once its part is on disk. One group commit is in the writer
 * thread at a time; what is handed over meanwhile waits for it and goes in the next, so the groups fill
 * themselves while the disk syncs (the first one of a quiet spell takes what this event-loop turn brings).
 * Nothing resolves before the transaction that holds it has committed.
 */
export class Batcher {
  private commits: PendingCommit[] = [];
  private records: PendingRecord[] = [];
  private scheduled = false;
  /** The group commits under way, one after another, until nothing waits. */
  private writing: Promise<void> | undefined;
  /** Resolves when the group that takes what waits now has been written. */
  private next: { promise: Promise<void>; resolve: () => void } | undefined;

  constructor(
    private readonly writer: WriterClient,
    private readonly space: SpaceAccount,
    /** Runs a write that only empties the queue (outcomes without new mail): it may use the ballast. */
    private readonly drain: (write: () => Promise<void>) => Promise<void>,
  ) {}

  /** Queues a message; resolves with its id once it is on disk. */
  commit(msg: NewMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      this.commits.push({ msg, resolve, reject });
      this.schedule();
    });
  }

  /** Records delivery outcomes with the next group commit; rejects with a QueueStorageError when they could not be written. */
  record(results: readonly OutcomeWrite[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.records.push({ results, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Resolves once everything handed over so far has been written (or has failed). A release (or retry) decided
   * on states without the outcomes still waiting would miss a row whose 'held' outcome is written just after
   * it, and that row would stay held for good; closing waits for it too.
   */
  settled(): Promise<void> {
    if (!this.commits.length && !this.records.length) return this.writing ?? Promise.resolve();
    if (!this.next) {
      let resolve!: () => void;
      this.next = { promise: new Promise<void>((r) => (resolve = r)), resolve };
    }
    return this.next.promise;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.writing ??= this.run().finally(() => (this.writing = undefined));
    });
  }

  private async run(): Promise<void> {
    while (this.commits.length || this.records.length) {
      const { commits, records, next } = this;
      this.commits = [];
      this.records = [];
      this.next = undefined;
      await this.write(commits, records);
      next?.resolve();
    }
  }

  /**
   * Together when that works; apart after a failure, so that new mail the disk has no room for does not keep
   * delivered mail from leaving the queue (and the reverse). Never rejects: each promise gets its outcome.
   */
  private async write(commits: PendingCommit[], records: PendingRecord[]): Promise<void> {
    const now = Date.now();
    if (commits.length && records.length && (await this.tryWrite(commits, records, now, false))) return;
    if (records.length) await this.tryWrite([], records, now, true);
    if (commits.length) await this.tryWrite(commits, [], now, true);
  }

  private async tryWrite(commits: PendingCommit[], records: PendingRecord[], now: number, report: boolean): Promise<boolean> {
    const outcomes = records.flatMap((r) => r.results);
    // Copies made for each try: a try hands its copies over to the writer thread (see wire.ts).
    const write = () => {
      const wired = commits.map((c) => messageToWire(c.msg));
      return this.writer.call('write', [wired.map((w) => w.message), outcomes, now], wired.flatMap((w) => w.transfer));
    };
    try {
      await (commits.length ? write() : this.drain(write));
    } catch (err) {
      if (report) for (const p of [...commits, ...records]) p.reject(err as Error);
      return false;
    }
    this.space.took(commits.reduce((n, p) => n + bodySize(p.msg.body), 0));
    for (const p of commits) p.resolve(p.msg.id);
    for (const r of records) r.resolve();
    return true;
  }
}
