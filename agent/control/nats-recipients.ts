import type { KV, KvWatchEntry } from '@nats-io/kv';
import { errorMessage } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { KvFollower } from '../../shared/nats.js';
import { ShardAssembler } from '../../shared/recipient-shards.js';
import type { ControlSession } from './session.js';

/** After a refused update the watch replays the bucket (a snapshot) this much later: never a tight loop. */
const RESYNC_AFTER_MS = 5000;

/**
 * The agent's recipient lists from NATS: follows the `<fleet>-recipients` bucket, assembles whole versions
 * (shared/recipient-shards.ts) and hands each to the session like a gRPC update, so lists are applied, persisted
 * and acked the same way in both modes. A snapshot of the version already in force is not applied again.
 */
export class NatsRecipientFollower {
  private readonly assembler = new ShardAssembler();
  private readonly follower: KvFollower;
  private resync: NodeJS.Timeout | undefined;

  constructor(
    name: string,
    open: () => Promise<KV>,
    private readonly session: ControlSession,
    /** Called after an update was applied or refused (the agent's state in NATS carries the version). */
    private readonly applied: () => void,
    private readonly log: Logger,
  ) {
    this.follower = new KvFollower(name, open, '>', (e) => this.accept(e), log, (watching) => {
      if (watching) this.assembler.reset();
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
    let delta;
    try {
      delta = this.assembler.accept(e);
    } catch (err) {
      this.log.error({ error: errorMessage(err), key: e.key }, 'unreadable recipient-list version in NATS; keeping the lists in force');
      return;
    }
    if (!delta || (delta.snapshot && delta.version === this.session.recipientsVersion)) return;
    void this.session.recipients({ ...delta, last: true }).then((outcome) => {
      if (outcome?.error) {
        clearTimeout(this.resync);
        this.resync = setTimeout(() => this.follower.restart(), RESYNC_AFTER_MS);
        this.resync.unref();
      }
      this.applied();
    });
  }
}
