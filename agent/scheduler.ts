import type { AgentConfig } from '../shared/config.js';
import { addressKey } from '../shared/address.js';
import type { Logger } from '../shared/logger.js';
import { parseTarget, type Route, type RouteTable, type Target } from '../shared/routes.js';
import type { DeliveryAttempt, RecipientResult } from './delivery.js';
import type { Outbound } from './delivery-client.js';
import { BounceNotices } from './dsn.js';
import type { ClaimedRecipient, Outcome, RecipientRow, Spool } from './spool/spool.js';
import type { Router } from './router.js';

/** Recipients of one message that share a next hop: they go in one SMTP transaction. */
interface Group {
  hop: string;
  target: Target;
  tlsRequired: boolean;
  /** Each row's `route` holds the match of the route it is being sent by. */
  rows: ClaimedRecipient[];
}

export interface DeliveryCounters {
  delivered: number;
  deferred: number;
  bounced: number;
  lastError: string;
}

/** An outcome to record for a claimed recipient. */
type Rec = { row: ClaimedRecipient; route: string | null; outcome: Outcome };

type Decision = { group: Omit<Group, 'rows'>; route: string } | { outcome: Outcome; route: string | null };

const hopKey = (target: Target, tls: boolean) => `${target.mx ? target.host : `[${target.host}]`}:${target.port}${tls ? '+tls' : ''}`;

/**
 * Takes due recipients from the queue, resolves their route at that moment (so queued mail follows route
 * changes), sends them through bounded per-hop slots, and records outcomes: delivered and bounced leave the
 * queue, temporary failures back off, held routes are never attempted.
 */
export class Scheduler {
  readonly counters: DeliveryCounters = { delivered: 0, deferred: 0, bounced: 0, lastError: '' };
  /** Told each delivered recipient's time from arrival to the next hop's 250, in seconds (the latency histogram). */
  onDelivered: (seconds: number) => void = () => undefined;
  private readonly waiting = new Map<string, Group[]>();
  private readonly active = new Map<string, number>();
  private readonly inflight = new Set<Group>();
  private claimed = 0;
  private timer: NodeJS.Timeout | undefined;
  private kickPending = false;
  /** The claim (and dispatch) in progress: one at a time, so no recipient is claimed twice. */
  private ticking: Promise<void> | undefined;
  /** A tick was asked for while one ran: run another as soon as it is done. */
  private retick = false;
  /** Route table changes reconcile holds one after another, in the order the tables were applied. */
  private reconciling: Promise<void> = Promise.resolve();
  /** The reconciliation with the last table applied (rejected when it failed). */
  private lastReconcile: Promise<void> = Promise.resolve();
  private stopped = true;
  private settleWaiters: { affected: (g: Group) => boolean; resolve: () => void }[] = [];
  private readonly maxClaimed: number;
  /** Outcomes the queue could not record (disk full, I/O error): retried every tick until they are written. */
  private unrecorded: { row: ClaimedRecipient; route: string | null; outcome: Outcome }[] = [];
  private storageErrorLoggedAt = 0;
  private readonly notices: BounceNotices;

  constructor(
    private readonly queue: Spool,
    private readonly router: Router,
    private readonly delivery: Outbound,
    private readonly config: Pick<AgentConfig, 'retry' | 'delivery'>,
    hostname: string,
    private readonly log: Logger,
  ) {
    this.maxClaimed = config.delivery.connectionsPerHop * 50;
    this.notices = new BounceNotices(queue, hostname, log, config.retry.intervals[0]!);
    router.on('change', (table) => this.reconcileHolds(table));
  }

  start(): void {
    this.stopped = false;
    this.reconcileHolds(this.router.table);
    this.timer = setInterval(() => this.tick(), this.config.delivery.pollInterval);
    this.timer.unref();
    this.kick();
  }

  /** Stops taking work and waits (bounded) for sends in flight; unsent claims become due again at next start. */
  async stop(timeoutMs = 10_000): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    const deadline = Date.now() + timeoutMs;
    await Promise.all([this.ticking, this.reconciling]);
    while (this.inflight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // Outcomes kept after a storage error: a last try, otherwise their rows are due again at the next start.
    if (this.unrecorded.length) await this.recordPending();
  }

  kick(): void {
    if (this.kickPending || this.stopped) return;
    this.kickPending = true;
    setImmediate(() => {
      this.kickPending = false;
      this.tick();
    });
  }

  /** Makes deferred mail (all, or under `covers`) due now and starts delivering it. */
  async flush(covers?: (address: string) => boolean): Promise<number> {
    const n = await (covers ? this.queue.retryWhere((row) => covers(addressKey(row.rcpt))) : this.queue.retryWhere());
    this.kick();
    return n;
  }

  /**
   * Resolves once no send in flight goes somewhere `table` no longer allows (a held route or another next
   * hop). An ack sent after this means: nothing more reaches the old next hop from this agent.
   */
  settle(table: RouteTable): Promise<void> {
    const affected = (g: Group) =>
      g.rows.some((row) => {
        const route = this.routeFor(row, table);
        return !route || route.hold || hopKey(parseTarget(route.target), route.tls === 'required') !== g.hop;
      });
    if (![...this.inflight].some(affected)) return Promise.resolve();
    return new Promise((resolve) => this.settleWaiters.push({ affected, resolve }));
  }

  /** The route in force for a recipient; a DSN to an unrouted sender goes to the sender domain's MX. */
  private routeFor(row: ClaimedRecipient, table: RouteTable): Route | undefined {
    const address = addressKey(row.rcpt);
    const route = table.lookup(address);
    if (route || !row.dsn) return route;
    return { match: '', target: `smtp:${address.slice(address.lastIndexOf('@') + 1)}:25` };
  }

  /** Resolves once the queue's route holds match the last table applied; rejects when that could not be written. */
  holdsReconciled(): Promise<void> {
    return this.lastReconcile;
  }

  /**
   * Releases route holds `table` no longer has and holds what it holds. Chained: a release and hold decided on
   * one table never interleave with those of the next (a hold by the older table would otherwise stay).
   */
  private reconcileHolds(table: RouteTable): void {
    const run = this.reconciling.then(async () => {
      const heldByRoute = (row: RecipientRow) => Boolean(table.lookup(addressKey(row.rcpt))?.hold);
      const released = await this.queue.releaseWhere((row) => row.holdKind === 'route' && !heldByRoute(row));
      // Without a held route there is nothing to hold: no pass over every waiting recipient.
      const held = table.heldCount > 0 ? await this.queue.holdWhere(heldByRoute, 'route', 'held by route') : 0;
      if (released || held) this.log.info({ released, held, version: table.version }, 'holds reconciled with route table');
      this.kick();
    });
    this.lastReconcile = run;
    this.reconciling = run.catch((err: unknown) => this.log.error({ err, version: table.version }, 'cannot reconcile holds with the route table'));
  }

  /** Starts a claim-and-dispatch round unless one is in flight (then another follows it). */
  private tick(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.retick = true;
      return;
    }
    this.ticking = this.claimAndDispatch().finally(() => {
      this.ticking = undefined;
      if (this.retick) {
        this.retick = false;
        this.kick();
      }
    });
  }

  private async claimAndDispatch(): Promise<void> {
    if (this.unrecorded.length && !(await this.recordPending())) return;
    const room = Math.min(this.config.delivery.batchSize, this.maxClaimed - this.claimed);
    if (room <= 0) return;
    const now = Date.now();
    let rows: ClaimedRecipient[];
    try {
      rows = await this.queue.claimDue(now, room);
    } catch (err) {
      // Logged once a minute: this runs every pollInterval while the disk is full.
      this.storageError(err, 'cannot claim due work from the queue; retrying');
      return;
    }
    if (rows.length === 0) return;
    this.claimed += rows.length;
    for (const hop of this.place(rows, now)) this.dispatch(hop);
    if (rows.length === room) this.retick = true;
  }

  /**
   * Decides where each row goes now: rows with an outcome already (held, no route) are finished, the others wait
   * for a slot at their next hop. Returns the hops that got rows.
   */
  private place(rows: readonly ClaimedRecipient[], now: number): Set<string> {
    const immediate: Rec[] = [];
    const hops = new Set<string>();
    for (const row of rows) {
      const decision = this.decide(row, now);
      if ('outcome' in decision) immediate.push({ row, route: decision.route, outcome: decision.outcome });
      else hops.add(this.enqueue(row, decision));
    }
    if (immediate.length) void this.finishDecided(immediate, now);
    return hops;
  }

  private decide(row: ClaimedRecipient, now: number): Decision {
    const route = this.routeFor(row, this.router.table);
    if (!route) return { outcome: this.temporaryFailure(row, '4.4.0 no route for this recipient in the current table', now), route: null };
    if (route.hold) return { outcome: { kind: 'held', reply: 'held by route', holdKind: 'route' }, route: route.match };
    const target = parseTarget(route.target);
    const tlsRequired = route.tls === 'required';
    return { group: { hop: hopKey(target, tlsRequired), target, tlsRequired }, route: route.match };
  }

  private enqueue(row: ClaimedRecipient, decision: { group: Omit<Group, 'rows'>; route: string }): string {
    const { group } = decision;
    row.route = decision.route;
    const list = this.waiting.get(group.hop) ?? [];
    const existing = list.find((g) => g.rows[0]!.msgId === row.msgId);
    if (existing) existing.rows.push(row);
    else list.push({ ...group, rows: [row] });
    this.waiting.set(group.hop, list);
    return group.hop;
  }

  private dispatch(hop: string): void {
    const list = this.waiting.get(hop);
    while (list?.length && (this.active.get(hop) ?? 0) < this.config.delivery.connectionsPerHop && !this.stopped) {
      const group = list.shift()!;
      // Re-check the route at the moment of sending: the table may have changed while this waited for a slot.
      const now = Date.now();
      const stale = group.rows.filter((row) => {
        const d = this.decide(row, now);
        return 'outcome' in d || d.group.hop !== hop || d.route !== row.route;
      });
      if (stale.length) {
        group.rows = group.rows.filter((r) => !stale.includes(r));
        for (const h of this.place(stale, now)) if (h !== hop) setImmediate(() => this.dispatch(h));
      }
      if (group.rows.length) void this.send(group);
    }
  }

  private async send(group: Group): Promise<void> {
    this.active.set(group.hop, (this.active.get(group.hop) ?? 0) + 1);
    this.inflight.add(group);
    const first = group.rows[0]!;
    // A large message comes as a stream of its stored parts, never whole in memory.
    const body = await this.queue.forDelivery(first.msgId);
    const attempt = body ? await this.delivery.send(group.target, group.tlsRequired, { from: first.sender, to: group.rows.map((r) => r.rcpt) }, body.raw) : undefined;
    this.active.set(group.hop, (this.active.get(group.hop) ?? 1) - 1);
    this.inflight.delete(group);
    // An operator removed the message meanwhile: its rows are gone, nothing to record.
    if (body && attempt) await this.recordResults(group, attempt, body.head);
    else this.claimed -= group.rows.length;
    this.wakeSettlers();
    this.dispatch(group.hop);
    this.kick();
  }

  private async recordResults(group: Group, attempt: DeliveryAttempt, head: Buffer): Promise<void> {
    const now = Date.now();
    const records = group.rows.map((row, i) => {
      const result: RecipientResult = attempt.results[i]!;
      let outcome: Outcome;
      if (result.status === 'delivered') outcome = { kind: 'delivered', reply: result.reply };
      else if (result.status === 'permanent') outcome = { kind: 'bounced', reply: result.reply };
      else outcome = this.temporaryFailure(row, result.reply, now);
      return { row, route: row.route, outcome };
    });
    this.logOutcomes(records, attempt, now);
    if (records.some((r) => r.outcome.kind === 'bounced')) await this.notices.notify(records, now, { head, remoteMta: group.target.host });
    this.finish(records);
  }

  /**
   * One line per recipient, as Postfix's smtp lines: to, relay, delay (seconds since arrival), TLS version and the
   * reply; the message says what became of it (delivered, deferred, bounced) so a grep finds each kind.
   */
  private logOutcomes(records: readonly { row: ClaimedRecipient; outcome: Outcome }[], attempt: DeliveryAttempt, now: number): void {
    // A line per recipient at full speed: build none of them when info is off (log.level warn).
    if (!this.log.isLevelEnabled('info')) return;
    for (const { row, outcome } of records) {
      const line = { queueId: row.msgId, to: row.rcpt, relay: attempt.relay, delay: Math.round((now - row.arrivedAt) / 100) / 10, tls: attempt.tlsVersion ?? 'none', reply: outcome.reply };
      if (outcome.kind === 'deferred') this.log.info(line, 'deferred');
      else if (outcome.kind === 'bounced') this.log.info(line, 'bounced');
      else this.log.info(line, 'delivered');
    }
  }

  /**
   * Outcomes decided without a send (held; no route). A recipient left without a route until retry.maxAge bounces
   * here, and needs its DSN like any other bounce (without one its mail would be lost silently).
   */
  private async finishDecided(records: Rec[], now: number): Promise<void> {
    const byMsg = new Map<string, Rec[]>();
    for (const r of records) if (r.outcome.kind === 'bounced') byMsg.set(r.row.msgId, [...(byMsg.get(r.row.msgId) ?? []), r]);
    for (const bounced of byMsg.values()) await this.notices.notify(bounced, now);
    this.finish(records);
  }

  private temporaryFailure(row: ClaimedRecipient, reply: string, now: number): Outcome {
    const age = now - row.arrivedAt - row.heldMs;
    if (age >= this.config.retry.maxAge) return { kind: 'bounced', reply: `5.4.7 delivery time expired; last reply: ${reply}` };
    const intervals = this.config.retry.intervals;
    const base = intervals[Math.min(row.attempts, intervals.length - 1)]!;
    const jitter = 1 + (Math.random() * 2 - 1) * this.config.retry.jitter;
    return { kind: 'deferred', reply, dueAt: now + Math.round(base * jitter) };
  }

  private finish(records: { row: ClaimedRecipient; route: string | null; outcome: Outcome }[]): void {
    this.claimed -= records.length;
    const now = Date.now();
    for (const { row, outcome } of records) {
      if (outcome.kind === 'delivered') {
        this.counters.delivered++;
        this.onDelivered((now - row.arrivedAt) / 1000);
      } else if (outcome.kind === 'bounced') this.counters.bounced++;
      else if (outcome.kind === 'deferred') {
        this.counters.deferred++;
        this.counters.lastError = `${row.rcpt}: ${outcome.reply}`;
      }
    }
    // Group commit: outcomes are written with everything else committed in this event-loop turn (one fsync);
    // until then their rows stay in flight, as if the sends were still going on.
    this.queue.recordSoon(records).catch((err: unknown) => {
      // Found by the fault suite (disk full): the rows stayed in flight until the next restart, delivered mail
      // then went out twice and deferred mail waited for a restart. Keep the outcomes and write them later.
      this.storageError(err, 'cannot record delivery outcomes; keeping them to retry');
      this.unrecorded.push(...records);
    });
    const bounced = records.filter((r) => r.outcome.kind === 'bounced' && r.row.sender === '');
    if (bounced.length) this.log.info({ count: bounced.length }, 'bounced mail from the null sender dropped without notification');
  }

  /** Writes outcomes kept after a failed record; true when none are left. */
  private async recordPending(): Promise<boolean> {
    const records = this.unrecorded;
    this.unrecorded = [];
    try {
      await this.queue.record(records);
      this.log.info({ count: records.length }, 'delivery outcomes recorded after a storage error');
      return true;
    } catch (err) {
      this.unrecorded = [...records, ...this.unrecorded];
      this.storageError(err, 'still cannot record delivery outcomes');
      return false;
    }
  }

  private storageError(err: unknown, msg: string): void {
    const now = Date.now();
    if (now - this.storageErrorLoggedAt < 60_000) return;
    this.storageErrorLoggedAt = now;
    this.log.error({ err, unrecorded: this.unrecorded.length }, msg);
  }

  private wakeSettlers(): void {
    this.settleWaiters = this.settleWaiters.filter((w) => {
      if ([...this.inflight].some(w.affected)) return true;
      w.resolve();
      return false;
    });
  }
}
