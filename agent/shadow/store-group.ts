import type { ShadowBatchRows, Spool } from '../spool/spool.js';

type Pending = { rows: ShadowBatchRows; resolve: () => void; reject: (err: Error) => void };

/**
 * The peer's group commit: batches from every client stream that arrive while one transaction is being written
 * go together in the next one (one fsync for all), like the queue's own Batcher. Each batch's promise settles
 * once the transaction that holds it has committed.
 */
export class ShadowStoreGroup {
  private waiting: Pending[] = [];
  private writing = false;

  constructor(private readonly spool: Spool) {}

  store(rows: ShadowBatchRows): Promise<void> {
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
          await this.spool.shadowStore(group.map((p) => p.rows));
          for (const p of group) p.resolve();
        } catch (err) {
          for (const p of group) p.reject(err as Error);
        }
      }
    } finally {
      this.writing = false;
    }
  }
}
