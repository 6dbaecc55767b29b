import { buffersDone } from './buffer-garbage.js';
import { PART_BYTES, type Spool } from './spool/spool.js';

/**
 * Parts handed to the writer but not yet written at which the sender's data is paused: without it a sender faster
 * than the disk piled the whole message up in memory (a 50 MB message raised RSS by 2.5x its size).
 */
const MAX_PARTS_IN_FLIGHT = 2;

/** What `IncomingData.finish` hands over: the bytes of a small message, the staged size of a large one, or the write error. */
export type StoredData = { chunks: Buffer[] } | { staged: number } | Error;

/**
 * The data of one message as it arrives. Up to PART_BYTES it stays in memory; past that it goes to the queue in
 * parts of about PART_BYTES as it comes (Spool.stagePart: no fsync, the message's commit syncs them before the
 * 250), so a 50 MB message is never held whole. Parts of a message that is then refused, fails or is never
 * finished are dropped again (and at the next start, those of a run that stopped meanwhile). The writes go one
 * after another: `finish` waits for them, a drop runs after them.
 */
export class IncomingData {
  private chunks: Buffer[] = [];
  private held = 0;
  private seq = 0;
  private staged = 0;
  private error: Error | undefined;
  /** The part writes (and a drop) so far, in order; never rejects (a failed write sets `error`). */
  private writes: Promise<void> = Promise.resolve();
  private inFlight = 0;
  private onDrained: (() => void)[] = [];

  constructor(
    private readonly queue: Spool,
    readonly id: string,
  ) {}

  get size(): number {
    return this.staged + this.held;
  }

  add(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.held += chunk.length;
    if (this.held >= PART_BYTES) this.stage();
  }

  /** Enough parts are waiting for the disk: stop reading the sender until `drained()`. */
  get backlogged(): boolean {
    return this.inFlight >= MAX_PARTS_IN_FLIGHT;
  }

  /** Resolves once the parts in flight are below the limit again. */
  drained(): Promise<void> {
    if (!this.backlogged) return Promise.resolve();
    return new Promise((resolve) => this.onDrained.push(resolve));
  }

  private stage(): void {
    const part = Buffer.concat(this.chunks, this.held);
    this.chunks = [];
    this.held = 0;
    if (this.error) return;
    const seq = this.seq++;
    this.staged += part.length;
    this.inFlight++;
    this.writes = this.writes.then(async () => {
      try {
        if (!this.error) await this.queue.stagePart(this.id, seq, part);
        // the part, its chunks and the copy sent to the writer
        buffersDone(3 * part.length);
      } catch (err) {
        this.error = err as Error;
      } finally {
        this.inFlight--;
        if (!this.backlogged) for (const resolve of this.onDrained.splice(0)) resolve();
      }
    });
  }

  /** The data in memory (a small message), or what was staged (a large one, its tail staged now) once written. */
  async finish(): Promise<StoredData> {
    if (this.seq === 0 && !this.error) return { chunks: this.chunks };
    if (this.held) this.stage();
    await this.writes;
    return this.error ?? { staged: this.staged };
  }

  /** Removes what was staged, after the writes still under way. */
  drop(): void {
    if (this.seq === 0) return;
    this.seq = 0;
    this.writes = this.writes.then(() =>
      this.queue.dropParts(this.id).catch(() => {
        // removed at the next start instead
      }),
    );
  }
}
