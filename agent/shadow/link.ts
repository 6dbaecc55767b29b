import { Metadata, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type { Logger } from '../../shared/logger.js';
import { ShadowServiceClient, type ReplicateRequest, type ReplicateResponse, type ShadowCopy, type ShadowDiscard, type ShadowHold, type ShadowHoldNotice, type ShadowPart } from '../../proto/gen/mxswitch/v1/shadow.js';
import { ShadowPeerError, type PeerRef } from './assignment.js';
import type { ShadowTransport } from './tls.js';
import { sendInParts, TransferSlots } from './transfer.js';

type Waiter = { resolve: () => void; reject: (err: Error) => void };
type Sent = { waiters: Waiter[]; discards: ShadowDiscard[]; holds: ShadowHoldNotice[] };
/** Hold states waiting for a batch: per queue id, per recipient (a newer state replaces an older one). */
type PendingHolds = Map<string, Map<string, ShadowHold>>;

/** Batches on the wire at once, unanswered (pipelining); more wait and go together. */
const WINDOW = 8;
/** Bytes of copies per batch, so a batch stays well under the message size limit. */
const BATCH_BYTES = 8 * 1024 * 1024;
/**
 * Notices of a failed batch are tried again on their own after this, doubling up to RETRY_MAX while the peer
 * stays away: a primary gone quiet must not leave the peer with a delivered message's copy (a duplicate after a
 * takeover) or a stale hold state, nor spin reconnecting to a peer that is down.
 */
const RETRY_FIRST = 250;
const RETRY_MAX = 5_000;

/**
 * The client side of shadow redundancy: one Replicate stream to the peer, opened when needed. Copies and discard
 * notices handed over in one event-loop turn go in one batch; up to WINDOW batches are on the wire unanswered,
 * and whatever comes meanwhile goes in the next batch (so batches grow with the load, like a group commit). A
 * copy's promise resolves when the peer acked its batch (durable there) and rejects with ShadowPeerError when
 * the stream fails first; discards of a failed batch are sent again with the next one, or by a retry timer with
 * backoff when nothing else comes (see RETRY_FIRST). Hold notices carry a
 * recipient's hold state as it is now, so only the newest per recipient goes, and never in a batch before its
 * message's copy handed over earlier (the peer would have no row to set yet). A large message goes in parts (see sendInParts),
 * all of them and its copy on one stream: the peer keeps the parts it staged for a copy on that stream only.
 */
export class ShadowLink {
  private readonly client: ShadowServiceClient;
  private call: ClientDuplexStream<ReplicateRequest, ReplicateResponse> | undefined;
  private lastBatch = 0;
  private readonly sent = new Map<number, Sent>();
  private copies: { copy: ShadowCopy; waiter: Waiter }[] = [];
  private parts: { part: ShadowPart; waiter: Waiter }[] = [];
  private lastTransfer = 0;
  /** Large copies handed over whose parts are still going (or wait for a slot), by id: their hold notices wait. */
  private readonly transferring = new Map<string, number>();
  private readonly slots = new TransferSlots();
  private discards: ShadowDiscard[] = [];
  private holds: PendingHolds = new Map();
  private scheduled = false;
  private closed = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay = RETRY_FIRST;

  constructor(
    readonly peer: PeerRef,
    private readonly selfId: string,
    transport: ShadowTransport,
    private readonly log: Logger,
  ) {
    this.client = new ShadowServiceClient(peer.address, transport.client(peer.agentId), {
      'grpc.max_send_message_length': 128 * 1024 * 1024,
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2_000,
    });
  }

  /**
   * Resolves once the peer holds `copy` durably. `parts`: the rest of a large message's body after `copy.body`,
   * read as it goes (see sendInParts); `signal` gives such a transfer up between two parts.
   */
  copy(copy: ShadowCopy, parts?: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<void> {
    if (this.closed) return Promise.reject(new ShadowPeerError('down', 'the shadow link is closed'));
    const whole = (c: ShadowCopy) => this.queued((waiter) => this.copies.push({ copy: c, waiter }));
    if (!parts) return whole(copy);
    this.transferring.set(copy.id, (this.transferring.get(copy.id) ?? 0) + 1);
    const sink = { part: (part: ShadowPart) => this.queued((waiter) => this.parts.push({ part, waiter })), whole };
    return this.slots.run(() => sendInParts(sink, copy, parts, ++this.lastTransfer, signal)).finally(() => {
      const left = this.transferring.get(copy.id)! - 1;
      if (left) this.transferring.set(copy.id, left);
      else this.transferring.delete(copy.id);
      if (this.holds.has(copy.id)) this.schedule();
    });
  }

  /** Settles when the batch that takes what `push` queued is answered (or fails). */
  private queued(push: (waiter: Waiter) => void): Promise<void> {
    // A transfer that waited for its slot may find the link closed meanwhile.
    if (this.closed) return Promise.reject(new ShadowPeerError('down', 'the shadow link is closed'));
    return new Promise((resolve, reject) => {
      push({ resolve, reject });
      this.schedule();
    });
  }

  /** Sends a discard notice with the next batch (best effort: a lost one can only cause a duplicate). */
  discard(d: ShadowDiscard): void {
    if (this.closed) return;
    this.discards.push(d);
    this.schedule();
  }

  /** Sends the hold state of some recipients with the next batch (best effort, like discards). */
  hold(notice: ShadowHoldNotice): void {
    if (this.closed) return;
    for (const h of notice.holds) pendingFor(this.holds, notice.id).set(h.recipient, h);
    this.schedule();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.fail(new ShadowPeerError('down', 'the shadow peer changed'));
    for (const { waiter } of [...this.copies, ...this.parts]) waiter.reject(new ShadowPeerError('down', 'the shadow peer changed'));
    this.copies = [];
    this.parts = [];
    this.client.close();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.waiting() && this.sent.size < WINDOW && !this.closed) {
      const call = (this.call ??= this.open());
      const budget = { bytes: 0 };
      const parts = take(this.parts, (p) => p.part.data.length, budget);
      const taken = take(this.copies, (c) => c.copy.body.length, budget);
      const discards = this.discards;
      this.discards = [];
      const holds = this.takeReadyHolds();
      const batchId = ++this.lastBatch;
      this.sent.set(batchId, { waiters: [...parts, ...taken].map((t) => t.waiter), discards, holds });
      call.write({ batchId, copies: taken.map((t) => t.copy), discards, holds, parts: parts.map((p) => p.part) });
    }
  }

  private waiting(): boolean {
    if (this.copies.length > 0 || this.parts.length > 0 || this.discards.length > 0) return true;
    const pending = this.pendingCopies();
    return [...this.holds.keys()].some((id) => !pending.has(id));
  }

  /** Messages whose copy, handed over earlier, has not gone in a batch yet (or still sends its parts). */
  private pendingCopies(): Set<string> {
    return new Set([...this.transferring.keys(), ...this.copies.map((c) => c.copy.id)]);
  }

  /**
   * Hold notices that may go now: a notice waits only for its own message's copy (the peer would have no row to
   * set yet); those of other messages do not wait behind it, so a long transfer does not keep them back.
   */
  private takeReadyHolds(): ShadowHoldNotice[] {
    if (!this.holds.size) return [];
    const pending = this.pendingCopies();
    const ready: ShadowHoldNotice[] = [];
    for (const [id, byRcpt] of this.holds) {
      if (pending.has(id)) continue;
      ready.push({ id, holds: [...byRcpt.values()] });
      this.holds.delete(id);
    }
    return ready;
  }

  private open(): ClientDuplexStream<ReplicateRequest, ReplicateResponse> {
    const md = new Metadata();
    md.set('authorization', `Bearer ${this.peer.credential}`);
    md.set('x-mxswitch-agent', this.selfId);
    const call = this.client.replicate(md);
    call.on('data', (r: ReplicateResponse) => this.answered(r));
    const ended = (err?: ServiceError) => {
      if (this.call !== call) return;
      this.call = undefined;
      const why = err ? err.details || err.message : 'stream ended';
      this.log.warn({ peer: this.peer.agentId, address: this.peer.address, reason: why }, 'shadow peer stream ended');
      this.fail(new ShadowPeerError(err?.code === 16 || err?.code === 7 ? 'refused' : 'down', `shadow peer ${this.peer.agentId}: ${why}`));
    };
    call.on('error', ended);
    call.on('end', () => ended());
    return call;
  }

  private answered(r: ReplicateResponse): void {
    const s = this.sent.get(r.batchId);
    if (!s) return;
    this.sent.delete(r.batchId);
    if (r.error) {
      const err = new ShadowPeerError('refused', `shadow peer ${this.peer.agentId} could not store: ${r.error}`);
      for (const w of s.waiters) w.reject(err);
      this.putBack([s]);
    } else {
      for (const w of s.waiters) w.resolve();
      this.retryDelay = RETRY_FIRST;
    }
    // Notices put back wait for their timer (a store that keeps failing is not hammered); copies never do.
    if (this.copies.length || (this.waiting() && !this.retryTimer)) this.schedule();
  }

  /**
   * Everything on the wire failed: copies are rejected, discards and hold notices wait (see putBack). So are the
   * parts and closing copies of transfers still queued: the parts before them went on the stream that failed.
   */
  private fail(err: Error): void {
    const sent = [...this.sent.values()];
    this.sent.clear();
    const spoiled = [...this.parts, ...this.copies.filter((c) => c.copy.transfer)];
    this.parts = [];
    this.copies = this.copies.filter((c) => !c.copy.transfer);
    for (const w of [...sent.flatMap((s) => s.waiters), ...spoiled.map((s) => s.waiter)]) w.reject(err);
    this.putBack(sent);
  }

  /**
   * Notices of failed batches (oldest first) wait for the next batch, which the retry timer sends when nothing
   * else does; a hold state is put back only where no newer one waits (newest batch first).
   */
  private putBack(failed: readonly Sent[]): void {
    if (this.closed) return;
    for (const s of failed) this.discards.push(...s.discards);
    for (const s of [...failed].reverse())
      for (const n of s.holds) {
        const byRcpt = pendingFor(this.holds, n.id);
        for (const h of n.holds) if (!byRcpt.has(h.recipient)) byRcpt.set(h.recipient, h);
      }
    if (this.waiting()) this.retryLater();
  }

  /** One flush after the current backoff, which doubles each time until a batch is acked again. */
  private retryLater(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.flush();
    }, this.retryDelay);
    this.retryTimer.unref();
    this.retryDelay = Math.min(this.retryDelay * 2, RETRY_MAX);
  }
}

/** The first items of `queue` that fit the batch's byte budget (at least one when the batch is still empty). */
function take<T>(queue: T[], size: (item: T) => number, budget: { bytes: number }): T[] {
  let n = 0;
  while (n < queue.length && (budget.bytes === 0 || budget.bytes + size(queue[n]!) <= BATCH_BYTES)) budget.bytes += size(queue[n++]!);
  return queue.splice(0, n);
}

function pendingFor(pending: PendingHolds, id: string): Map<string, ShadowHold> {
  let byRcpt = pending.get(id);
  if (!byRcpt) pending.set(id, (byRcpt = new Map()));
  return byRcpt;
}
