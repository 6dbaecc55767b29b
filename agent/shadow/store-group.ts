import type { ShadowBatchRows, Spool } from '../spool/spool.js';

type Pending = { rows: ShadowBatchRows; resolve: (incomplete: string[]) => void; reject: (err: Error) => void };

/**
 * The peer's group commit: batches from every client stream that arrive while one transaction is being written
 * go together in the next one (one fsync for all), like the queue's own Batcher. Each batch's promise settles
 * once the transaction that holds it has committed, with the ids of its large copies not kept (parts missing).
 */
export class ShadowStoreGroup {
  private waiting: Pending[] = [];
  private writing = false;

  constructor(private readonly spool: Spool) {}

  /** A part of a large copy, written at once (no fsync, no group: the copy's commit syncs it). */
  stagePart(origin: string, id: string, xfer: number, seq: number, data: Uint8Array): Promise<void> {
    return this.spool.shadowStagePart(origin, id, xfer, seq, data);
  }

  /** The staged parts of a transfer that will not be committed. */
  dropStaged(origin: string, id: string, xfer: number): void {
    this.spool.shadowDropStaged(origin, id, xfer).catch(() => {
      // removed at the next start instead
    });
  }

  store(rows: ShadowBatchRows): Promise<string[]> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ rows, resolve, reject });
      if (!this.writing) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.writing = true;
    try {
      while (this.waiting.length) {
        const group = this.waiting;
        this.waiting = [];
        try {
          const incomplete = await this.spool.shadowStore(group.map((p) => p.rows));
          group.forEach((p, i) => p.resolve(incomplete[i] ?? []));
        } catch (err) {
          for (const p of group) p.reject(err as Error);
        }
      }
    } finally {
      this.writing = false;
    }
  }
}
