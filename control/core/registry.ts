import { EventEmitter } from 'node:events';
import type { Logger } from '../../shared/logger.js';
import { MxError, quoteInput } from '../../shared/errors.js';
import type { AgentHealth } from './model.js';
import type { AgentDirectory } from './ports.js';
import type { ShadowView } from './shadow-plan.js';

export type AgentState = 'connected' | 'disconnected' | 'lost';

/** The controller's view of one agent (what `status` shows and what the orchestrator waits on). */
export interface AgentInfo {
  id: string;
  region: string;
  hostname: string;
  bootId: string;
  state: AgentState;
  /** Table version the agent has acked (or reported when its session started). */
  appliedVersion: number;
  /** What it runs and where it takes mail, from its last session's start ('' until then). */
  software: { version: string; smtpListen: string };
  /** Recipient-list version the agent has acked (or reported when its session started). */
  recipientsVersion: number;
  /** The last nack: the version the agent refused and why. */
  lastNack: { version: number; error: string } | undefined;
  /** Most recent problem (nack reason, stream error); cleared by a later successful ack. */
  lastError: string;
  health: AgentHealth | undefined;
  /** When the last health report arrived (ms epoch), 0 if never. */
  healthAt: number;
  lastSeen: number;
  /** When the agent's current session registered (ms epoch), 0 while not connected. */
  connectedAt: number;
  expected: boolean;
  /** Its shadow redundancy as the shadow plan sees it (undefined when off). */
  shadow: ShadowView | undefined;
}

/** What watchers of an agent see change (its last-seen time alone is not news). */
function signature(a: AgentInfo): string {
  return JSON.stringify([a.state, a.appliedVersion, a.recipientsVersion, a.lastError, a.lastNack, a.region, a.hostname, a.bootId, a.connectedAt, a.expected, a.software, a.shadow]);
}

/** What a transport saw of one agent (see Registry.observe). */
export interface Observation {
  /** The link came up (a session, a fresh report) or went down (the session ended, reports went stale). */
  link?: 'connected' | 'disconnected';
  identity?: { region: string; hostname: string; bootId: string };
  /** The table version the agent reports as applied (in its Hello, an ack, its bucket entry). */
  appliedVersion?: number;
  /** The agent refused a table. */
  nack?: { version: number; error: string };
  /** The recipient-list version the agent reports as applied. */
  recipientsVersion?: number;
  software?: { version: string; smtpListen: string };
  health?: AgentHealth;
  /** Why the link went down. */
  error?: string;
  /** Its shadow redundancy, from the shadow plan. */
  shadow?: ShadowView;
}

export type RegistryEvents = {
  /** Any change to one agent (state, version, ack, health). */
  agent: [AgentInfo];
  removed: [string];
};


/**
 * Agents and their state. The set of registered agents is persisted (it defines the expected fleet when
 * `expectedAgents` is not configured); everything else is live state, rebuilt from what the transports observe
 * after a restart. The registry knows no transport: gRPC sessions and the NATS agents bucket both call observe().
 */
export class Registry extends EventEmitter<RegistryEvents> {
  private readonly agents = new Map<string, AgentInfo>();
  private readonly configured: ReadonlySet<string> | undefined;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly directory: AgentDirectory,
    expectedAgents: readonly string[] | undefined,
    private readonly lostAfterMs: number,
    private readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
    this.configured = expectedAgents ? new Set(expectedAgents) : undefined;
    for (const r of directory.load()) this.agents.set(r.id, this.blank(r.id, r.region, r.hostname, r.bootId, r.lastSeen));
    for (const id of expectedAgents ?? []) if (!this.agents.has(id)) this.agents.set(id, this.blank(id, '', '', '', 0));
    for (const a of this.agents.values()) a.expected = this.isExpected(a.id);
  }

  private blank(id: string, region: string, hostname: string, bootId: string, lastSeen: number): AgentInfo {
    return {
      id,
      region,
      hostname,
      bootId,
      // Nothing is known about an agent the controller has not heard from since its own start.
      state: 'disconnected',
      appliedVersion: 0,
      recipientsVersion: 0,
      software: { version: '', smtpListen: '' },
      lastNack: undefined,
      lastError: '',
      health: undefined,
      healthAt: 0,
      lastSeen,
      connectedAt: 0,
      expected: this.isExpected(id),
      shadow: undefined,
    };
  }

  /** Marks disconnected agents silent for lostAfter as lost. */
  start(): void {
    const every = Math.max(50, Math.min(5000, Math.floor(this.lostAfterMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  sweep(now = Date.now()): void {
    for (const a of this.agents.values()) {
      if (a.state !== 'lost' && a.lastSeen > 0 && now - a.lastSeen > this.lostAfterMs) {
        a.state = 'lost';
        this.log.warn({ agent: a.id, silentMs: now - a.lastSeen }, 'agent lost (no contact)');
        this.changed(a);
      }
    }
  }

  isExpected(id: string): boolean {
    if (this.configured) return this.configured.has(id);
    return this.agents.has(id);
  }

  /** Ids of the fleet operations wait for. */
  expectedIds(): string[] {
    return [...this.agents.keys()].filter((id) => this.isExpected(id)).sort();
  }

  list(): AgentInfo[] {
    return [...this.agents.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  get(id: string): AgentInfo | undefined {
    return this.agents.get(id);
  }

  /**
   * The one input from the transports: what was seen of agent `id` at `at` (a session's Hello, ack, health or
   * heartbeat; its end; an agents-bucket entry). Absent fields were not seen this time. A link that comes up (or
   * a new boot id) starts a session: the version it reports is taken as it is; otherwise versions only grow.
   * Unknown agents are registered only by an observation that carries their identity. Emits 'agent' when
   * anything but the last-seen time changed.
   */
  observe(id: string, o: Observation, at = Date.now()): AgentInfo | undefined {
    let a = this.agents.get(id);
    const known = this.directory.has(id);
    if (!a) {
      if (!o.identity) return undefined;
      a = this.blank(id, o.identity.region, o.identity.hostname, o.identity.bootId, at);
      this.agents.set(id, a);
    }
    const before = signature(a);
    const rebooted = !!o.identity && !!a.bootId && a.bootId !== o.identity.bootId;
    if (rebooted) this.log.info({ agent: id, bootId: o.identity!.bootId }, 'agent restarted (new boot id)');
    const starts = o.link === 'connected' && (a.state !== 'connected' || rebooted);
    if (o.identity) Object.assign(a, o.identity);
    // The shadow plan's view alone is not news from the agent: it must not look alive (or seen) because of it.
    const viewOnly = o.shadow !== undefined && Object.keys(o).length === 1;
    if (!viewOnly) a.lastSeen = Math.max(a.lastSeen, at);
    if (o.appliedVersion !== undefined) a.appliedVersion = starts ? o.appliedVersion : Math.max(a.appliedVersion, o.appliedVersion);
    // A list snapshot may lower it (the controller's database was restored): taken as reported.
    if (o.recipientsVersion !== undefined) a.recipientsVersion = o.recipientsVersion;
    if (o.software) a.software = { ...o.software };
    if (o.shadow) a.shadow = { ...o.shadow, tookOver: [...o.shadow.tookOver] };
    if (starts) {
      a.state = 'connected';
      a.connectedAt = at;
    } else if (o.link === 'disconnected' && a.state === 'connected') {
      a.state = 'disconnected';
      a.connectedAt = 0;
      if (o.error) a.lastError = o.error;
      this.log.info({ agent: id, reason: o.error || 'stream closed' }, 'agent disconnected');
    } else if (!o.link && a.state === 'lost' && !viewOnly) {
      // Any message from a lost agent: it is alive again.
      a.state = 'connected';
    }
    if (o.nack && (a.lastNack?.version !== o.nack.version || a.lastNack.error !== o.nack.error)) {
      a.lastNack = { ...o.nack };
      a.lastError = `version ${o.nack.version} refused: ${o.nack.error}`;
      this.log.warn({ agent: id, ...o.nack }, 'agent refused route table');
    } else if (o.appliedVersion !== undefined && a.lastNack && a.appliedVersion >= a.lastNack.version) {
      a.lastError = '';
    }
    if (o.health) {
      // Health does not move appliedVersion: only an ack (or a session's start) says a table is in force with
      // nothing in flight that it forbids.
      a.health = o.health;
      a.healthAt = at;
    }
    if (o.identity) {
      this.directory.upsert(a, a.lastSeen);
      a.expected = this.isExpected(id);
      if (!known) this.log.info({ agent: id, region: a.region }, starts ? 'agent registered' : 'agent known (not reporting now)');
    }
    if (o.health || signature(a) !== before) this.changed(a);
    return a;
  }

  /** Forgets an agent removed elsewhere (another controller replica ran `agent rm`): no checks. */
  forget(id: string): void {
    const a = this.agents.get(id);
    if (!a) return;
    this.directory.delete(id);
    if (this.configured?.has(id)) {
      // Listed in expectedAgents: still expected, only what was known about it goes.
      this.agents.set(id, this.blank(id, '', '', '', 0));
      this.changed(this.agents.get(id)!);
      return;
    }
    this.agents.delete(id);
    this.log.info({ agent: id }, 'agent removed from the fleet (elsewhere)');
    this.emit('removed', id);
  }

  /** Forgets an agent: it is no longer expected. Refused while it is connected or listed in expectedAgents. */
  remove(id: string): void {
    const a = this.agents.get(id);
    if (!a) throw new MxError('NOT_FOUND', `no agent ${quoteInput(id)}`);
    if (this.configured?.has(id)) throw new MxError('FAILED_PRECONDITION', `agent ${quoteInput(id)} is listed in expectedAgents; remove it from the controller config`);
    if (a.state === 'connected') throw new MxError('FAILED_PRECONDITION', `agent ${quoteInput(id)} is connected; stop it first`);
    this.directory.delete(id);
    this.agents.delete(id);
    this.log.info({ agent: id }, 'agent removed from the fleet');
    this.emit('removed', id);
  }

  private changed(a: AgentInfo): void {
    this.emit('agent', a);
  }
}
