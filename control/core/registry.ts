import { EventEmitter } from 'node:events';
import type { Logger } from '../../shared/logger.js';
import { MxError, quoteInput } from '../../shared/errors.js';
import type { AgentHealth, AgentHello } from './model.js';
import type { AgentDirectory } from './ports.js';

export type AgentState = 'connected' | 'disconnected' | 'lost';

/** The controller's view of one agent (what `status` shows and what the orchestrator waits on). */
export interface AgentInfo {
  id: string;
  region: string;
  hostname: string;
  bootId: string;
  state: AgentState;
  /** Table version the agent has acked (or reported in AgentHello when its session started). */
  appliedVersion: number;
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
}

export type RegistryEvents = {
  /** Any change to one agent (state, version, ack, health). */
  agent: [AgentInfo];
  removed: [string];
};


/**
 * Agents and their state. The set of registered agents is persisted (it defines the expected fleet when
 * `expectedAgents` is not configured); everything else is live state rebuilt from AgentHello/Ack/AgentHealth after a restart.
 * Without a database (NATS mode) nothing is persisted here: the agents bucket is the list, fed in with restore().
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
      lastNack: undefined,
      lastError: '',
      health: undefined,
      healthAt: 0,
      lastSeen,
      connectedAt: 0,
      expected: this.isExpected(id),
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

  /** A session said AgentHello: the agent is (re)registered and connected. */
  hello(hello: AgentHello, now = Date.now()): AgentInfo {
    let a = this.agents.get(hello.agentId);
    const isNew = !a || !this.directory.has(hello.agentId);
    if (!a) {
      a = this.blank(hello.agentId, hello.region, hello.hostname, hello.bootId, now);
      this.agents.set(a.id, a);
    }
    if (a.bootId && a.bootId !== hello.bootId) this.log.info({ agent: a.id, bootId: hello.bootId }, 'agent restarted (new boot id)');
    a.region = hello.region;
    a.hostname = hello.hostname;
    a.bootId = hello.bootId;
    a.state = 'connected';
    a.appliedVersion = hello.appliedVersion;
    a.lastSeen = now;
    a.connectedAt = now;
    this.directory.upsert(a, now);
    a.expected = this.isExpected(a.id);
    if (isNew) this.log.info({ agent: a.id, region: a.region }, 'agent registered');
    this.changed(a);
    return a;
  }

  /**
   * An agent known from a shared store (NATS agents bucket) whose last report is not fresh: registered, expected,
   * not connected; its last known version and health are kept for `status`.
   */
  restore(hello: AgentHello, lastSeen: number, health?: AgentHealth): AgentInfo {
    let a = this.agents.get(hello.agentId);
    const isNew = !a;
    if (!a) {
      a = this.blank(hello.agentId, hello.region, hello.hostname, hello.bootId, lastSeen);
      this.agents.set(a.id, a);
      a.expected = this.isExpected(a.id);
    }
    a.region = hello.region;
    a.hostname = hello.hostname;
    a.bootId = hello.bootId;
    a.appliedVersion = Math.max(a.appliedVersion, hello.appliedVersion);
    a.lastSeen = Math.max(a.lastSeen, lastSeen);
    if (health) {
      a.health = health;
      a.healthAt = lastSeen;
    }
    if (a.state === 'connected') {
      a.state = 'disconnected';
      a.connectedAt = 0;
    }
    this.directory.upsert(a, lastSeen);
    if (isNew) this.log.info({ agent: a.id, region: a.region }, 'agent known (not reporting now)');
    this.changed(a);
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

  ack(id: string, version: number, error: string, now = Date.now()): void {
    const a = this.agents.get(id);
    if (!a) return;
    a.lastSeen = now;
    if (error) {
      a.lastNack = { version, error };
      a.lastError = `version ${version} refused: ${error}`;
      this.log.warn({ agent: id, version, error }, 'agent refused route table');
    } else {
      if (version > a.appliedVersion) a.appliedVersion = version;
      if (a.lastNack && version >= a.lastNack.version) a.lastError = '';
    }
    this.changed(a);
  }

  health(id: string, health: AgentHealth, now = Date.now()): void {
    const a = this.agents.get(id);
    if (!a) return;
    a.lastSeen = now;
    a.health = health;
    a.healthAt = now;
    // AgentHealth does not move appliedVersion: only an ack (or AgentHello) says a table is in force with nothing in
    // flight that it forbids.
    this.changed(a);
  }

  /** Any message (heartbeat, command result): the agent is alive. No event, to keep watch streams quiet. */
  touch(id: string, now = Date.now()): void {
    const a = this.agents.get(id);
    if (a) {
      a.lastSeen = now;
      if (a.state === 'lost') {
        a.state = 'connected';
        this.changed(a);
      }
    }
  }

  disconnected(id: string, error: string): void {
    const a = this.agents.get(id);
    if (!a || a.state !== 'connected') return;
    a.state = 'disconnected';
    a.connectedAt = 0;
    if (error) a.lastError = error;
    this.log.info({ agent: id, reason: error || 'stream closed' }, 'agent disconnected');
    this.changed(a);
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
