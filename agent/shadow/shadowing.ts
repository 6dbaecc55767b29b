import type { Readable } from 'node:stream';
import type { AgentConfig } from '../../shared/config.js';
import type { Logger } from '../../shared/logger.js';
import type { ShadowCopy } from '../../proto/gen/mxswitch/v1/shadow.js';
import type { GoneRecipients, ShadowHoldNoticeRow, ShadowHoldRow, Spool } from '../spool/spool.js';
import { ShadowPeerError, type CopyVerdict, type Pairing, type PeerRef } from './assignment.js';
import { holdToWire } from './hold-wire.js';
import { ShadowLink } from './link.js';
import { reachable } from './reachability.js';
import { ShadowServer } from './server.js';
import { ShadowStoreGroup } from './store-group.js';
import { ShadowTransport } from './tls.js';

type ShadowSettings = NonNullable<AgentConfig['shadow']>;

/** A message as it goes to the peer. */
export interface OutgoingCopy {
  id: string;
  sender: string;
  recipients: readonly string[];
  /** Whole, or (a message stored in parts) a new stream of its parts per call: it goes to the peer in parts. */
  body: Buffer | (() => Readable);
  arrivedAt: number;
  dsn?: boolean;
  /** Recipients held now or before (a re-shadowed message): the time held travels with the copy. */
  holds?: readonly ShadowHoldRow[];
}

/** What the controller hears about shadowing from this agent (ShadowReport). */
export interface ShadowStatus {
  appliedVersion: number;
  peer: string;
  unreachableClients: string[];
  unshadowed: number;
  shadowCopies: number;
}

/** Messages per re-shadow round. */
const RESHADOW_BATCH = 200;

/**
 * Shadow redundancy on one agent: the copy of each accepted message at its peer before the 250 (copy), the
 * copies of the messages still without one (re-shadowing, after a peer was down or replaced), discard notices
 * for recipients that left the queue, the peer service for this agent's own clients, and the controller's
 * pairing and takeovers (apply). A message accepted without a copy is marked in the queue (and stays in it when
 * the agent is taken over); every other one is at the peer.
 */
export class Shadowing {
  private readonly server: ShadowServer;
  private readonly transport: ShadowTransport;
  private link: ShadowLink | undefined;
  private pairing: Pairing = { version: 0, peer: undefined, clients: [], takeovers: [] };
  /** Copies on their way in an SMTP session: not re-shadowed meanwhile (a tempfail removes them). */
  private readonly copying = new Set<string>();
  private reshadowing = false;
  private unreachable = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private applying: Promise<unknown> = Promise.resolve();
  /** Told when the status the controller should hear changed (unreachable clients, version). */
  onReport: (() => void) | undefined;
  /** Told after copies of a lost agent joined the queue. */
  onAdopted: (() => void) | undefined;
  counters = { copied: 0, unshadowedAccepted: 0, refused: 0, adopted: 0, droppedTakenOver: 0 };

  constructor(
    private readonly settings: ShadowSettings,
    private readonly spool: Spool,
    private readonly selfId: string,
    private readonly log: Logger,
  ) {
    this.transport = new ShadowTransport(settings.tls);
    this.server = new ShadowServer(settings.listen, new ShadowStoreGroup(spool), this.transport, log);
    spool.onGone = (gone) => this.discard(gone);
    spool.onHolds = (changed) => this.holdsChanged(changed);
  }

  get port(): number {
    return this.server.port;
  }

  get appliedVersion(): number {
    return this.pairing.version;
  }

  get onPeerDown(): 'accept' | 'tempfail' {
    return this.settings.onPeerDown;
  }

  async start(): Promise<void> {
    await this.server.start();
    const every = (ms: number, f: () => void) => {
      const t = setInterval(f, ms);
      t.unref();
      this.timers.push(t);
    };
    every(1000, () => void this.reshadow());
    every(1000, () => void this.probeClients());
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.link?.close();
    await this.server.stop();
  }

  status(): ShadowStatus {
    return {
      appliedVersion: this.pairing.version,
      peer: this.pairing.peer?.agentId ?? '',
      unreachableClients: [...this.unreachable].sort(),
      unshadowed: this.spool.shadowViews.unconfirmedCount(),
      shadowCopies: this.spool.shadowViews.copyCount(),
    };
  }

  /**
   * The copy before the 250: resolves 'copied' once the peer holds it durably, else (no peer, peer down,
   * slower than shadow.timeout) 'unshadowed' with onPeerDown accept or 'refuse' with tempfail. Never rejects.
   */
  async copy(msg: OutgoingCopy): Promise<CopyVerdict> {
    const link = this.link;
    this.copying.add(msg.id);
    try {
      if (!link) throw new ShadowPeerError('none', 'no shadow peer assigned');
      await sendCopy(link, msg, this.settings.timeout);
      this.counters.copied++;
      return 'copied';
    } catch (err) {
      const accept = this.settings.onPeerDown === 'accept';
      if (accept) this.counters.unshadowedAccepted++;
      else this.counters.refused++;
      this.log.warn({ queueId: msg.id, reason: (err as Error).message, onPeerDown: this.settings.onPeerDown }, accept ? 'accepted without a shadow copy' : 'refused: no shadow copy');
      return accept ? 'unshadowed' : 'refuse';
    } finally {
      this.copying.delete(msg.id);
    }
  }

  /**
   * Accepted with one copy (onPeerDown accept): marked durably before its 250, so that it is copied once a peer
   * takes it and stays here if this agent is taken over. A message is taken as copied unless marked: one that was
   * committed while its copy was still on its way when the process died never got its 250.
   */
  markUnshadowed(id: string): Promise<void> {
    return this.spool.shadowMarkUnconfirmed([id]);
  }

  /** A message committed here whose 250 was refused: its copy at the peer goes too. */
  forget(id: string): void {
    this.link?.discard({ id, recipients: [] });
  }

  private discard(gone: readonly GoneRecipients[]): void {
    const link = this.link;
    if (!link) return;
    for (const g of gone) link.discard({ id: g.msgId, recipients: g.rcpts });
  }

  /** Recipients put on hold or released: their hold state goes to the peer, so a takeover keeps the time held. */
  private holdsChanged(changed: readonly ShadowHoldNoticeRow[]): void {
    const link = this.link;
    if (!link) return;
    for (const n of changed) link.hold({ id: n.id, holds: n.holds.map(holdToWire) });
  }

  /** Applies the controller's pairing, one at a time in arrival order. */
  apply(next: Pairing): Promise<void> {
    const result = this.applying.then(() => this.applyNow(next));
    this.applying = result.catch((err: unknown) => this.log.error({ err }, 'shadow assignment could not be applied'));
    return result;
  }

  private async applyNow(next: Pairing): Promise<void> {
    if (next.version < this.pairing.version) return;
    const previous = this.pairing;
    // Taken over while away: the peer delivers what it had; only what it never confirmed stays here.
    const mine = next.takeovers.filter((t) => t.agentId === this.selfId).sort((a, b) => b.version - a.version)[0];
    if (mine && mine.version > this.spool.shadowViews.takenOverVersion()) {
      const dropped = await this.spool.shadowDropTakenOver(mine.version);
      this.counters.droppedTakenOver += dropped;
      this.log.warn({ by: mine.byAgentId, version: mine.version, dropped }, 'this agent was taken over while away: dropped the messages its peer delivers');
    }
    for (const t of next.takeovers) {
      if (t.byAgentId !== this.selfId) continue;
      const adopted = await this.spool.shadowAdopt(t.agentId);
      if (adopted.messages) {
        this.counters.adopted += adopted.messages;
        this.log.warn({ lost: t.agentId, ...adopted }, 'took over a lost agent: its shadow copies joined the queue');
        this.onAdopted?.();
      }
    }
    this.server.setPairs(next.clients, next.peer);
    const clientIds = new Set(next.clients.map((c) => c.agentId));
    for (const c of previous.clients) {
      const takenOverByUs = next.takeovers.some((t) => t.agentId === c.agentId && t.byAgentId === this.selfId);
      if (!clientIds.has(c.agentId) && !takenOverByUs) await this.spool.shadowDropOrigin(c.agentId);
    }
    if (!samePeer(previous.peer, next.peer)) {
      this.link?.close();
      this.link = next.peer ? new ShadowLink(next.peer, this.selfId, this.transport, this.log) : undefined;
      if (next.peer && next.peer.agentId !== previous.peer?.agentId) {
        // A new peer has none of our copies: every queued message goes to it.
        const waiting = await this.spool.shadowUnconfirmAll();
        this.log.info({ peer: next.peer.agentId, address: next.peer.address, waiting }, 'shadow peer assigned');
      }
    }
    this.pairing = next;
    this.unreachable = new Set([...this.unreachable].filter((id) => clientIds.has(id)));
    this.onReport?.();
    void this.reshadow();
  }

  /** Copies of the queued messages still without one, oldest first, while a peer takes them. */
  private async reshadow(): Promise<void> {
    if (this.reshadowing || !this.link) return;
    this.reshadowing = true;
    try {
      for (;;) {
        const link = this.link;
        if (!link) return;
        const ids = this.spool.shadowViews.unconfirmed(RESHADOW_BATCH + this.copying.size).filter((id) => !this.copying.has(id));
        if (!ids.length) return;
        const copies = ids.map((id) => this.fromQueue(id)).filter((c): c is OutgoingCopy => !!c);
        const results = await Promise.allSettled(copies.map((c) => sendCopy(link, c, this.settings.timeout)));
        const done = copies.filter((_, i) => results[i]!.status === 'fulfilled').map((c) => c.id);
        const vanished = ids.filter((id) => !copies.some((c) => c.id === id));
        if (done.length || vanished.length) await this.spool.shadowConfirm([...done, ...vanished]);
        if (done.length < copies.length) return;
        this.log.info({ copied: done.length }, 're-shadowed queued messages');
      }
    } catch (err) {
      this.log.warn({ err }, 're-shadowing failed; tried again soon');
    } finally {
      this.reshadowing = false;
    }
  }

  /** A queued message as a copy: its recipients still queued here, its body (a large one as its parts). */
  private fromQueue(id: string): OutgoingCopy | undefined {
    const m = this.spool.message(id);
    const body = m && this.spool.bodyForCopy(id)?.raw;
    const rows = this.spool.recipientsOf(id);
    const recipients = rows.map((r) => r.rcpt);
    if (!m || !body || !recipients.length) return undefined;
    const holds = rows.filter((r) => r.heldMs > 0 || r.holdSince !== null).map((r) => ({ rcpt: r.rcpt, heldMs: r.heldMs, holdSince: r.holdSince, holdKind: r.holdKind }));
    return { id, sender: m.sender, recipients, body, arrivedAt: m.arrivedAt, dsn: this.spool.shadowViews.isDsn(id), holds };
  }

  /** Which clients this agent cannot reach (what a takeover needs the controller to hear). */
  private async probeClients(): Promise<void> {
    const clients = this.pairing.clients;
    const results = await Promise.all(clients.map(async (c) => [c.agentId, await reachable(c, this.selfId, this.transport, 1000)] as const));
    const now = new Set(results.filter(([, ok]) => !ok).map(([id]) => id));
    const changed = now.size !== this.unreachable.size || [...now].some((id) => !this.unreachable.has(id));
    this.unreachable = now;
    if (changed) {
      this.log.info({ unreachable: [...now] }, 'shadow clients unreachable from here');
      this.onReport?.();
    }
  }
}

function samePeer(a: PeerRef | undefined, b: PeerRef | undefined): boolean {
  return a?.agentId === b?.agentId && a?.address === b?.address && a?.credential === b?.credential;
}

const EMPTY = Buffer.alloc(0);

/** `m` to the peer within `ms`; a transfer in parts still going then is given up (no more parts are read). */
function sendCopy(link: ShadowLink, m: OutgoingCopy, ms: number): Promise<void> {
  const wire: ShadowCopy = { id: m.id, sender: m.sender, recipients: [...m.recipients], body: Buffer.isBuffer(m.body) ? m.body : EMPTY, arrivedAtMs: m.arrivedAt, dsn: m.dsn ?? false, holds: (m.holds ?? []).map(holdToWire), transfer: 0, parts: 0, size: 0 };
  const giveUp = new AbortController();
  const p = link.copy(wire, Buffer.isBuffer(m.body) ? undefined : m.body(), giveUp.signal);
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      giveUp.abort();
      reject(new ShadowPeerError('timeout', `no confirmation from the shadow peer within ${ms} ms`));
    }, ms);
  });
  p.catch(() => undefined);
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}
