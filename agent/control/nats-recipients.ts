import type { KV } from '@nats-io/kv';
import type { Logger } from '../../shared/logger.js';
import type { RecipientDelta } from '../../shared/recipient-list.js';
import { ShardAssembler } from '../../shared/recipient-shards.js';
import { VersionedFollower } from './nats-follower.js';
import type { ControlSession } from './session.js';

/**
 * The agent's recipient lists from NATS: follows the `<fleet>-recipients` bucket, assembles whole versions
 * (shared/recipient-shards.ts) and hands each to the session like a gRPC update, so lists are applied, persisted
 * and acked the same way in both modes. A snapshot of the version already in force is not applied again.
 */
export function recipientFollower(name: string, open: () => Promise<KV>, session: ControlSession, applied: () => void, log: Logger): VersionedFollower<RecipientDelta> {
  return new VersionedFollower(name, open, new ShardAssembler(), async (delta) => {
    if (delta.snapshot && delta.version === session.recipientsVersion) return false;
    const outcome = await session.recipients({ ...delta, last: true });
    applied();
    return Boolean(outcome?.error);
  }, log);
}
