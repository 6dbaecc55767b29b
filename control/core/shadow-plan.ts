import { createHmac, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from '../../shared/logger.js';
import { ringPeers } from './pairing.js';
import type { AgentInfo, Registry } from './registry.js';

/** An agent with shadow redundancy on, as its Hello announced it. */
export interface ShadowMemberInfo {
  address: string;
  takeoverAfterMs: number;
  /** Identity of its queue file: another one means the old disk is gone. */
  queueId: string;
}

/** "agent X taken over by Y" as recorded; cleared once X came back and applied it (then X rejoins the ring). */
export interface TakeoverRecord {
  agentId: string;
  byAgentId: string;
  version: number;
  atMs: number;
  cleared: boolean;
}

/** What the controller keeps of the pairing (survives restarts: the same credentials, the same takeovers). */
export interface ShadowPlanState {
  version: number;
  secret: string;
  members: Record<string, ShadowMemberInfo>;
  /** Agent id -> the peer that holds its copies now. */
  holders: Record<string, string>;
  takeovers: TakeoverRecord[];
}

export interface ShadowStateStore {
  load(): ShadowPlanState | undefined;
  save(state: ShadowPlanState): void;
}

/** An agent's last ShadowReport. */
export interface ShadowReportInfo {
  appliedVersion: number;
  unreachableClients: string[];
  unshadowed: number;
  shadowCopies: number;
  peer: string;
  at: number;
}

/** One agent's share of the plan: the ShadowAssignment it gets. */
export interface AgentAssignment {
  version: number;
  peer: { agentId: string; address: string; credential: string } | undefined;
  clients: { agentId: string; address: string; credential: string }[];
  takeovers: { agentId: string; byAgentId: string; version: number; atMs: number }[];
}

/** What `status` shows of one agent's shadowing. */
export interface ShadowView {
  peer: string;
  unshadowed: number;
  shadowCopies: number;
  appliedVersion: number;
  takenOverBy: string;
  tookOver: string[];
}

export type ShadowPlanEvents = { change: [] };

/** A plan before any agent announced itself: version 0 and a new secret for the pair credentials. */
export function freshShadowPlanState(): ShadowPlanState {
  return { version: 0, secret: randomBytes(32).toString('hex'), members: {}, holders: {}, takeovers: [] };
}

/**
 * The controller's shadow pairing and takeovers. Every agent that announced a shadow address is a member; the
 * active members (not lost, not taken over) form the ring (control/core/pairing.ts); a member that went quiet
 * keeps its holder until it is taken over, so its copies are never dropped while it may still be needed. A
 * takeover is decided here only: the member has been away from the controller for its takeoverAfter, and its
 * holder — connected — reports it cannot reach it either. Each change of the plan is a new version, persisted
 * before it is published.
 */
export class ShadowPlan extends EventEmitter<ShadowPlanEvents> {
  private state: ShadowPlanState;
  private readonly reports = new Map<string, ShadowReportInfo>();
  private timer: NodeJS.Timeout | undefined;
  private readonly onAgent = () => this.recompute();
  private readonly onRemoved = (id: string) => this.removed(id);

  constructor(
    private readonly store: ShadowStateStore,
    private readonly registry: Registry,
    private readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
    this.state = store.load() ?? freshShadowPlanState();
  }

  start(): void {
    this.registry.on('agent', this.onAgent);
    this.registry.on('removed', this.onRemoved);
    this.timer = setInterval(() => this.checkTakeovers(), 500);
    this.timer.unref();
    this.recompute();
  }

  stop(): void {
    clearInterval(this.timer);
    this.registry.off('agent', this.onAgent);
    this.registry.off('removed', this.onRemoved);
  }

  get version(): number {
    return this.state.version;
  }

  /** The agents with shadowing on, by id. */
  members(): string[] {
    return Object.keys(this.state.members).sort();
  }

  isMember(id: string): boolean {
    return id in this.state.members;
  }

  /** An agent's Hello announced shadowing (or, with no address, that it has it off). */
  hello(id: string, info: ShadowMemberInfo | undefined): void {
    const before = this.state.members[id];
    if (!info) {
      if (!before) return;
      delete this.state.members[id];
    } else if (before?.address === info.address && before.takeoverAfterMs === info.takeoverAfterMs && before.queueId === info.queueId) return;
    else {
      const holder = this.state.holders[id];
      // Back with another queue (its disk was lost or replaced): what its holder has of the old one is delivered
      // from there now, at once (waiting for takeoverAfter would only delay it: the old queue is not coming back).
      if (before?.queueId && info.queueId && before.queueId !== info.queueId && holder && !this.openTakeover(id)) this.takeOver(id, holder, Date.now(), 'came back with another queue (disk lost)');
      this.state.members[id] = { ...info };
    }
    this.recompute(true);
  }

  report(id: string, r: Omit<ShadowReportInfo, 'at'>, at = Date.now()): void {
    this.reports.set(id, { ...r, at });
    this.showView(id);
    const t = this.openTakeover(id);
    if (t && r.appliedVersion >= t.version) {
      // It came back, dropped what its holder delivers, and may rejoin the ring.
      t.cleared = true;
      this.log.info({ agent: id, by: t.byAgentId, version: t.version }, 'taken-over agent is back and applied its takeover; it rejoins the shadow ring');
      this.recompute(true);
      return;
    }
    this.checkTakeovers(at);
  }

  /** The assignment for `id`; undefined for an agent without shadowing. */
  assignmentFor(id: string): AgentAssignment | undefined {
    if (!this.isMember(id)) return undefined;
    const cred = (client: string, server: string) => createHmac('sha256', this.state.secret).update(`${client}\n${server}`).digest('hex');
    const peerId = this.openTakeover(id) ? undefined : this.state.holders[id];
    const peerInfo = peerId ? this.state.members[peerId] : undefined;
    const clients = Object.entries(this.state.holders)
      .filter(([client, holder]) => holder === id && this.state.members[client])
      .map(([client]) => ({ agentId: client, address: this.state.members[client]!.address, credential: cred(client, id) }));
    return {
      version: this.state.version,
      peer: peerId && peerInfo ? { agentId: peerId, address: peerInfo.address, credential: cred(id, peerId) } : undefined,
      clients: clients.sort((a, b) => a.agentId.localeCompare(b.agentId)),
      // Open ones only: a cleared takeover's agent is back in the ring, and its new copies are not to be adopted.
      takeovers: this.newestTakeovers()
        .filter((t) => !t.cleared)
        .map(({ agentId, byAgentId, version, atMs }) => ({ agentId, byAgentId, version, atMs })),
    };
  }

  view(id: string): ShadowView | undefined {
    if (!this.isMember(id)) return undefined;
    const r = this.reports.get(id);
    return {
      peer: this.state.holders[id] ?? '',
      unshadowed: r?.unshadowed ?? 0,
      shadowCopies: r?.shadowCopies ?? 0,
      appliedVersion: r?.appliedVersion ?? 0,
      takenOverBy: this.openTakeover(id)?.byAgentId ?? '',
      tookOver: this.newestTakeovers().filter((t) => t.byAgentId === id).map((t) => t.agentId),
    };
  }

  /** Every takeover, newest per agent. */
  takeovers(): TakeoverRecord[] {
    return this.newestTakeovers().map((t) => ({ ...t }));
  }

  private newestTakeovers(): TakeoverRecord[] {
    const newest = new Map<string, TakeoverRecord>();
    for (const t of this.state.takeovers) if ((newest.get(t.agentId)?.version ?? -1) < t.version) newest.set(t.agentId, t);
    return [...newest.values()].sort((a, b) => a.version - b.version);
  }

  private openTakeover(id: string): TakeoverRecord | undefined {
    const t = this.newestTakeovers().find((x) => x.agentId === id);
    return t && !t.cleared ? t : undefined;
  }

  private isActive(a: AgentInfo | undefined, id: string): boolean {
    return !!a && a.state !== 'lost' && !this.openTakeover(id);
  }

  /** Ring of the active members; a quiet member keeps its holder until it is taken over. Bumps the version on change. */
  private recompute(force = false): void {
    const active = Object.keys(this.state.members)
      .map((id) => ({ id, info: this.registry.get(id) }))
      .filter(({ id, info }) => this.isActive(info, id))
      .map(({ id, info }) => ({ id, region: info!.region }));
    const ring = ringPeers(active);
    const activeIds = new Set(active.map((a) => a.id));
    const holders: Record<string, string> = {};
    for (const id of Object.keys(this.state.members).sort()) {
      if (activeIds.has(id)) {
        const peer = ring.get(id);
        if (peer) holders[id] = peer;
      } else if (!this.openTakeover(id)) {
        const held = this.state.holders[id];
        if (held && activeIds.has(held)) holders[id] = held;
      }
    }
    if (!force && JSON.stringify(holders) === JSON.stringify(this.state.holders)) return;
    this.state.holders = holders;
    this.publish();
  }

  private publish(): void {
    this.state.version++;
    this.store.save(this.state);
    this.log.info({ version: this.state.version, holders: this.state.holders }, 'shadow pairing changed');
    this.emit('change');
    for (const id of Object.keys(this.state.members)) this.showView(id);
  }

  /** What `status` shows, into the registry (its 'agent' event then reaches watchers). */
  private showView(id: string): void {
    const view = this.view(id);
    if (view) this.registry.observe(id, { shadow: view });
  }

  /** A member away for its takeoverAfter whose connected holder cannot reach it either is taken over. */
  private checkTakeovers(now = Date.now()): void {
    for (const [id, info] of Object.entries(this.state.members)) {
      const a = this.registry.get(id);
      if (!a || a.state === 'connected' || this.openTakeover(id)) continue;
      const holder = this.state.holders[id];
      if (!holder || this.registry.get(holder)?.state !== 'connected') continue;
      if (now - a.lastSeen < info.takeoverAfterMs) continue;
      const r = this.reports.get(holder);
      // The holder's word must be newer than the last contact: a report from before the member went away says nothing.
      if (!r || r.at <= a.lastSeen || !r.unreachableClients.includes(id)) continue;
      this.takeOver(id, holder, now, `away ${Math.round((now - a.lastSeen) / 1000)} s and unreachable from ${holder}`);
    }
  }

  private takeOver(id: string, by: string, now: number, why: string): void {
    this.state.takeovers = this.state.takeovers.filter((t) => t.agentId !== id);
    this.state.takeovers.push({ agentId: id, byAgentId: by, version: this.state.version + 1, atMs: now, cleared: false });
    this.log.warn({ agent: id, by, version: this.state.version + 1, why }, 'agent taken over: its shadow peer delivers its mail');
    delete this.state.holders[id];
    // The version the takeover names is the one this publishes.
    this.recompute(true);
  }

  /** `agent rm`: a member not yet taken over is taken over by its holder first, so nothing it had is lost. */
  private removed(id: string): void {
    if (!this.isMember(id)) return;
    const holder = this.state.holders[id];
    if (holder && !this.openTakeover(id)) this.takeOver(id, holder, Date.now(), 'removed from the fleet (agent rm)');
    delete this.state.members[id];
    this.reports.delete(id);
    this.recompute(true);
  }
}
