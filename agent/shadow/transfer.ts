import type { ShadowCopy, ShadowPart } from '../../proto/gen/mxswitch/v1/shadow.js';
import { ShadowPeerError } from './assignment.js';

/**
 * Parts of one transfer on their way to the peer, unacked, at a time: the message is never whole in memory on
 * either side (the peer holds at most these until it staged them), and the disk at the peer keeps up.
 */
export const PARTS_IN_FLIGHT = 4;

/**
 * Transfers under way at once on one link; more wait for one to end. A re-shadow hands over up to 200 messages at
 * a time: without this, 200 large ones would each have their parts in flight together.
 */
export const TRANSFERS_AT_ONCE = 4;

/** Turns for TRANSFERS_AT_ONCE transfers, first come first served. */
export class TransferSlots {
  private free = TRANSFERS_AT_ONCE;
  private readonly queue: (() => void)[] = [];

  /** Runs `transfer` in a slot of its own. */
  async run<T>(transfer: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.queue.push(resolve));
    try {
      return await transfer();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.free++;
    }
  }
}

/** What a transfer needs of the link: a part, and the copy that closes the transfer (resolves once durable). */
export interface PartSink {
  part(p: ShadowPart): Promise<void>;
  whole(copy: ShadowCopy): Promise<void>;
}

/**
 * A large message to the peer: its bytes as parts of transfer `transfer` as `parts` yields them (read one at a
 * time from the queue), a few in flight; once all are staged at the peer, the copy naming them, whose commit makes
 * them durable there. Any failure (a part refused, the stream broken, `signal` aborted) ends it before the copy,
 * so the peer never keeps half a copy. Resolves once the peer holds the whole copy durably.
 */
export async function sendInParts(sink: PartSink, copy: ShadowCopy, parts: AsyncIterable<Buffer>, transfer: number, signal?: AbortSignal): Promise<void> {
  const unacked: Promise<void>[] = [];
  let seq = 0;
  let size = copy.body.length;
  for await (const data of parts) {
    if (signal?.aborted) throw new ShadowPeerError('timeout', 'the copy was given up before all its parts went');
    const acked = sink.part({ transfer, id: copy.id, seq: seq++, data });
    // Handled here at once: a later part may fail while an earlier one is awaited.
    acked.catch(() => undefined);
    unacked.push(acked);
    size += data.length;
    if (unacked.length >= PARTS_IN_FLIGHT) await unacked.shift();
  }
  await Promise.all(unacked);
  return sink.whole({ ...copy, transfer, parts: seq, size });
}
