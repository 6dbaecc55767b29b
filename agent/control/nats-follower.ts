import type { KV, KvWatchEntry } from '@nats-io/kv';
import { errorMessage } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { KvFollower } from '../../shared/nats.js';

/** After a refused update the watch replays the bucket (a snapshot) this much later: never a tight loop. */
const RESYNC_AFTER_MS = 5000;

/** Turns a bucket's entries, in watch order, into whole versions (shared/route-keys.ts, shared/recipient-shards.ts). */
export interface Assembler<U> {
  /** A new watch replays the bucket. */
  reset(): void;
  /** The update an entry completes, or undefined; throws on an unreadable entry. */
  accept(e: KvWatchEntry): U | undefined;
}

/**
 * Follows a versioned bucket (shared/kv-versions.ts) and hands each whole version to `apply`, one after the other
 * in the session's order. An update the agent refuses (a nack: a gap, a bad route) makes the watch start again a
 * little later, so the next update is a snapshot of the bucket.
 */
export class VersionedFollower<U> {
  private readonly follower: KvFollower;
  private resync: NodeJS.Timeout | undefined;

  constructor(
    private readonly name: string,
    open: () => Promise<KV>,
    private readonly assembler: Assembler<U>,
    /** Applies an update; resolves true when the agent refused it. */
    private readonly apply: (update: U) => Promise<boolean>,
    private readonly log: Logger,
    /** Told when the watch starts (after its replay began) or ends. */
    onWatching: (watching: boolean) => void = () => undefined,
  ) {
    this.follower = new KvFollower(name, open, '>', (e) => this.accept(e), log, (watching) => {
      if (watching) this.assembler.reset();
      onWatching(watching);
    });
  }

  start(): void {
    this.follower.start();
  }

  restart(): void {
    this.follower.restart();
  }

  stop(): Promise<void> {
    clearTimeout(this.resync);
    return this.follower.stop();
  }

  private accept(e: KvWatchEntry): void {
    let update: U | undefined;
    try {
      update = this.assembler.accept(e);
    } catch (err) {
      this.log.error({ error: errorMessage(err), bucket: this.name, key: e.key }, 'unreadable entry in NATS; keeping what is in force');
      return;
    }
    if (update === undefined) return;
    void this.apply(update).then((refused) => {
      if (!refused) return;
      clearTimeout(this.resync);
      this.resync = setTimeout(() => this.follower.restart(), RESYNC_AFTER_MS);
      this.resync.unref();
    });
  }
}
