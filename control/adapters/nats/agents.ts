import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV, KvEntry } from '@nats-io/kv';
import { errorMessage } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { commandSubject, KvFollower, parseAgentValue, readAll, type AgentValue } from '../../../shared/nats.js';
import { Command, CommandResult, Health } from '../../../proto/gen/mxswitch/v1/agent.js';
import type { Registry } from '../../core/registry.js';
import type { ShadowPlan } from '../../core/shadow-plan.js';
import { observeShadow } from './shadow.js';
import type { AgentCommander, CommandOutcome, RouteStoreApi } from '../../core/ports.js';
import { commandToWire, type AgentCommand } from '../../../shared/wire.js';

/** A report older than this many health intervals (and at least minStaleMs) means the agent is not connected. */
const STALE_INTERVALS = 3;

/**
 * Feeds the registry from the `<fleet>-agents` bucket: each agent's value is its state of the world (acked version,
 * last nack, health), stamped by the NATS server when written. An agent is connected while its reports are fresh
 * (younger than 3 of its health intervals, at least `minStaleMs`), disconnected when they stop or when it wrote
 * "stopped" on its way out; the registry's own sweep turns it lost after lostAfter. Times come from the server's
 * stamps, so every controller replica derives the same status from the same bucket.
 */
export class NatsAgentFeed {
  private readonly cache = new Map<string, { value: AgentValue; seenAt: number; revision: number }>();
  private readonly follower: KvFollower;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly onRemoved = (id: string) => {
    // Removed here (`agent rm`): delete its key so every replica forgets it. Removed elsewhere: the key is gone already.
    if (!this.cache.delete(id)) return;
    this.kv.delete(id).catch((err: unknown) => this.log.error({ agent: id, error: errorMessage(err) }, 'agent key not deleted from NATS'));
  };

  constructor(
    private readonly kv: KV,
    private readonly registry: Registry,
    private readonly store: RouteStoreApi,
    private readonly log: Logger,
    private readonly minStaleMs = 2000,
    private readonly shadow?: ShadowPlan,
  ) {
    this.follower = new KvFollower('agents', async () => kv, '>', (e) => this.accept(e), log);
  }

  async start(): Promise<void> {
    for (const e of await readAll(this.kv, '>')) this.accept(e);
    this.registry.on('removed', this.onRemoved);
    this.follower.start();
    this.sweeper = setInterval(() => this.sweep(), Math.max(100, Math.floor(this.minStaleMs / 8)));
    this.sweeper.unref();
  }

  restart(): void {
    this.follower.restart();
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    this.registry.off('removed', this.onRemoved);
    await this.follower.stop();
  }

  private staleAfter(v: AgentValue): number {
    return Math.max(this.minStaleMs, STALE_INTERVALS * (v.healthIntervalMs || 5000));
  }

  private accept(e: KvEntry): void {
    const id = e.key;
    const prev = this.cache.get(id);
    if (prev && e.revision <= prev.revision) return;
    if (e.operation !== 'PUT') {
      if (this.cache.delete(id)) this.registry.forget(id);
      return;
    }
    let v: AgentValue;
    try {
      v = parseAgentValue(e);
    } catch (err) {
      this.log.warn({ agent: id, error: errorMessage(err) }, 'unreadable agent state in NATS; ignored');
      return;
    }
    const seenAt = e.created.getTime();
    this.cache.set(id, { value: v, seenAt, revision: e.revision });
    const live = v.state === 'up' && Date.now() - seenAt <= this.staleAfter(v);
    this.registry.observe(
      id,
      {
        link: live ? 'connected' : 'disconnected',
        identity: { region: v.region, hostname: v.hostname, bootId: v.bootId },
        appliedVersion: v.appliedVersion,
        recipientsVersion: v.recipientsVersion ?? 0,
        nack: v.nack ?? undefined,
        health: this.health(id, v.health),
        ...(v.software ? { software: v.software } : {}),
      },
      seenAt,
    );
    if (v.appliedVersion > this.store.version) this.store.raiseVersionFloor(v.appliedVersion);
    // After the registry has its region: the ring needs it. Stamped by the server, like its lastSeen.
    if (this.shadow) observeShadow(this.shadow, id, v.shadow, seenAt);
  }

  /** The proto Health from its JSON form; dropped when it would not serialise (an agent wrote nonsense). */
  private health(id: string, json: unknown): Health | undefined {
    if (!json || typeof json !== 'object') return undefined;
    try {
      const h = Health.fromJSON(json);
      Health.encode(h);
      return h;
    } catch (err) {
      this.log.warn({ agent: id, error: errorMessage(err) }, 'unreadable agent health in NATS; ignored');
      return undefined;
    }
  }

  /** Agents whose last report went stale are no longer connected. */
  private sweep(now = Date.now()): void {
    for (const [id, c] of this.cache) {
      if (this.registry.get(id)?.state !== 'connected') continue;
      const age = now - c.seenAt;
      if (age > this.staleAfter(c.value)) this.registry.observe(id, { link: 'disconnected', error: `no report in NATS for ${(age / 1000).toFixed(1)} s` });
    }
  }
}

/** Commands by request/reply on `<fleet>.cmd.<agentId>` (protobuf Command -> CommandResult). */
export class NatsCommands implements AgentCommander {
  constructor(
    private readonly nc: NatsConnection,
    private readonly fleet: string,
  ) {}

  async command(agentId: string, command: AgentCommand, minVersion: number, timeoutMs: number): Promise<CommandOutcome> {
    const data = Command.encode(Command.fromPartial({ commandId: randomUUID(), minVersion, kind: commandToWire(command) })).finish();
    try {
      const reply = await this.nc.request(commandSubject(this.fleet, agentId), data, { timeout: timeoutMs });
      const r = CommandResult.decode(reply.data);
      return { ok: r.ok, error: r.error, json: r.json };
    } catch (err) {
      const text = errorMessage(err);
      if (/no responders/i.test(text)) return { ok: false, error: 'agent not connected (nobody answers on NATS)', json: '' };
      if (/timeout/i.test(text)) return { ok: false, error: `no result within ${timeoutMs} ms`, json: '' };
      return { ok: false, error: `NATS: ${text}`, json: '' };
    }
  }
}
