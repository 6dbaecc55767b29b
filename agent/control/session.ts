import { errorMessage, MxError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { RouteChunkAssembler, type RouteChunk, type RouteDelta } from '../../shared/route-delta.js';
import type { Route } from '../../shared/routes.js';
import type { AgentCommand, HealthReport } from '../../shared/wire.js';
import type { ControlHandler } from '../agent.js';
import type { ListChunk } from '../recipients/lists.js';
import type { HealthSnapshot } from '../health.js';
import type { Pairing } from '../shadow/assignment.js';
import type { ShadowStatus } from '../shadow/shadowing.js';

/** The agent's health as the report the controller keeps. */
export function healthReport(s: HealthSnapshot): HealthReport {
  return {
    appliedVersion: s.appliedVersion,
    queues: s.routes.map((r) => ({ match: r.match, queued: r.queued, deferred: r.deferred, held: r.held, inFlight: r.inFlight, oldestAgeSeconds: r.oldestAgeSeconds })),
    counters: s.counters,
    lastDeliveryError: s.lastDeliveryError,
    diskFreeBytes: s.diskFreeBytes,
    totalQueued: s.total,
    oldestAgeSeconds: s.oldestAgeSeconds,
    uptimeSeconds: s.uptimeSeconds,
    delivery: s.delivery,
  };
}

export interface TableOutcome {
  version: number;
  /** Set for a nack. */
  error?: string;
  /** The table was the one already acked (a watch restart, a reconnect): nothing was done. */
  unchanged?: boolean;
}

export interface CommandOutcome {
  ok: boolean;
  error: string;
  json: string;
}

/**
 * What both control transports (gRPC stream, NATS) share: tables apply in arrival order and are acked or nacked
 * only after the agent resolved them; commands wait for the tables that arrived before them and are refused below
 * their min_version; the acked version (not the router's: a swapped-in table is not acked until in-flight sends it
 * forbids have settled) is what Hello and health report. The transports only move bytes.
 */
export class ControlSession {
  private acked: number;
  private refused: { version: number; error: string } | null = null;
  private readonly chunks = new RouteChunkAssembler();
  private chain: Promise<unknown> = Promise.resolve();
  private connected = false;

  constructor(
    private readonly handler: ControlHandler,
    private readonly log: Logger,
  ) {
    this.acked = handler.appliedVersion;
  }

  get agentId(): string {
    return this.handler.agentId;
  }
  get region(): string {
    return this.handler.region;
  }
  get bootId(): string {
    return this.handler.bootId;
  }
  get ackedVersion(): number {
    return this.acked;
  }
  /** The newest table refused, until a table at or above it is applied. */
  get nack(): { version: number; error: string } | null {
    return this.refused;
  }

  /** Applies a whole table after those that came before it; resolves with the ack (or nack) to send. */
  table(version: number, routes: Route[]): Promise<TableOutcome> {
    return this.routeUpdate({ version, baseVersion: 0, snapshot: true, upserts: routes, removals: [] });
  }

  /** Applies a whole update (a snapshot, or a delta on top of its base) after those that came before it. */
  routeUpdate(delta: RouteDelta): Promise<TableOutcome> {
    return this.enqueue(() => this.applyUpdate(delta));
  }

  /**
   * Takes one chunk of a route update after what came before it; resolves with the ack (or nack) to send once
   * the update is whole, undefined before. An interrupted update is refused (nothing of it applied).
   */
  routeChunk(chunk: RouteChunk): Promise<TableOutcome | undefined> {
    return this.enqueue(async () => {
      const whole = this.chunks.add(chunk);
      if (!whole) return undefined;
      if ('error' in whole) return this.refuse(chunk.version, whole.error);
      return this.applyUpdate(whole.delta);
    });
  }

  private async applyUpdate(delta: RouteDelta): Promise<TableOutcome> {
    const { version } = delta;
    if (delta.snapshot && version === this.acked && version === this.handler.appliedVersion && !this.refused) return { version, unchanged: true };
    let error: string | undefined;
    try {
      error = await this.handler.applyTable(delta);
    } catch (err) {
      error = errorMessage(err) || 'route table could not be applied';
    }
    if (error !== undefined) return this.refuse(version, error);
    if (version > this.acked) this.acked = version;
    if (this.refused && this.refused.version <= version) this.refused = null;
    return { version };
  }

  private refuse(version: number, error: string): TableOutcome {
    this.refused = { version, error };
    return { version, error };
  }

  get software(): { version: string; smtpListen: string } {
    return this.handler.software;
  }

  /** The recipient-list version in force (what Hello reports). */
  get recipientsVersion(): number {
    return this.handler.recipientsVersion;
  }

  /**
   * Takes a chunk of a recipient-list update after what came before it; resolves with the ack (or refusal) to
   * send once the update is whole, undefined before.
   */
  recipients(chunk: ListChunk): Promise<{ version: number; error?: string } | undefined> {
    return this.enqueue(async () => this.handler.applyRecipients(chunk));
  }

  /** Runs a command after the tables that came before it; never rejects. */
  command(minVersion: number, decode: () => AgentCommand): Promise<CommandOutcome> {
    return this.enqueue(async () => {
      try {
        const value = await this.handler.runCommand(minVersion, decode());
        return { ok: true, error: '', json: value === undefined ? '' : JSON.stringify(value) };
      } catch (err) {
        const code = err instanceof MxError ? `${err.code}: ` : '';
        return { ok: false, error: `${code}${errorMessage(err)}`, json: '' };
      }
    });
  }

  /** The controller's current table version, as it just told; true when delivery starts because of it. */
  current(version: number): boolean {
    return this.handler.controllerCurrent(version);
  }

  /** Shadow redundancy: what Hello announces (undefined when it is off). */
  get shadowHello(): { address: string; takeoverAfterMs: number; version: number; queueId: string } | undefined {
    return this.handler.shadow?.hello();
  }

  /** Applies a shadow assignment after what came before it; resolves with the report to send. */
  shadowAssignment(pairing: Pairing): Promise<ShadowStatus | undefined> {
    return this.enqueue(async () => {
      const shadow = this.handler.shadow;
      if (!shadow) return undefined;
      await shadow.apply(pairing);
      return shadow.status();
    });
  }

  /** The shadow report to send now (undefined when shadowing is off or the snapshot failed). */
  shadowStatus(): ShadowStatus | undefined {
    try {
      return this.handler.shadow?.status();
    } catch (err) {
      this.log.warn({ err }, 'shadow status failed');
      return undefined;
    }
  }

  /** `listener` runs when the shadow report should go out at once. */
  watchShadow(listener: () => void): void {
    const shadow = this.handler.shadow;
    if (shadow) shadow.onReport = listener;
  }

  /** Tells the agent; true when this changed the state. */
  setConnected(connected: boolean): boolean {
    if (this.connected === connected) return false;
    this.connected = connected;
    try {
      this.handler.setConnected(connected);
    } catch (err) {
      this.log.error({ err }, 'setConnected failed');
    }
    return true;
  }

  /** Health with the acked version; undefined when the snapshot failed (logged). */
  health(): HealthReport | undefined {
    try {
      return { ...healthReport(this.handler.health()), appliedVersion: this.acked };
    } catch (err) {
      this.log.warn({ err }, 'health snapshot failed');
      return undefined;
    }
  }

  private enqueue<T>(step: () => Promise<T>): Promise<T> {
    const result = this.chain.then(step);
    this.chain = result.catch((err: unknown) => this.log.error({ err }, 'control step failed'));
    return result;
  }
}
