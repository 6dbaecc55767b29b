import { hostname as osHostname } from 'node:os';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { AgentConfig } from '../../shared/config.js';
import { errorMessage, MxError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import {
  agentInboxPrefix,
  bucketNames,
  commandSubject,
  decodeJson,
  encodeJson,
  KvFollower,
  kvManager,
  natsConnect,
  natsOptions,
  watchStatus,
  type AgentValue,
} from '../../shared/nats.js';
import type { RecipientDelta } from '../../shared/recipient-list.js';
import type { RouteDelta } from '../../shared/route-delta.js';
import { completeVersion, decodeRouteVersion, RouteAssembler, TABLE_GONE, VERSION_KEY } from '../../shared/route-keys.js';
import { commandFromWire, healthToWire } from '../../shared/wire.js';
import { Command, CommandResult, Health } from '../../proto/gen/mxswitch/v1/agent.js';
import { ShadowAssignment } from '../../proto/gen/mxswitch/v1/shadow.js';
import { pairingFromWire } from '../shadow/assignment.js';
import { shadowReportToWire } from '../shadow/report.js';
import type { ControlChannel, ControlChannelFactory, ControlHandler } from '../agent.js';
import { VersionedFollower } from './nats-follower.js';
import { recipientFollower } from './nats-recipients.js';
import { ControlSession } from './session.js';

type NatsSettings = NonNullable<NonNullable<AgentConfig['controller']>['nats']>;

export interface NatsChannelTuning {
  /** Pause between reconnect attempts (nats.js reconnectTimeWait). Default 500 ms. */
  reconnectTimeWaitMs?: number;
  /** Client ping interval. Default 10 s. */
  pingIntervalMs?: number;
  /** Limit of one connection attempt. Default 5 s. */
  connectTimeoutMs?: number;
}

/**
 * The agent end of the NATS control plane. Same contract as the gRPC channel: tables apply in order and are acked
 * (or nacked) only after the agent resolved applyTable; commands wait for the tables that arrived before them and
 * are refused below their min_version; whatever NATS does, relaying goes on with the table in force.
 *
 * - routes: watches the whole `<fleet>-routes` bucket (one key per route and a version key, shared/route-keys.ts)
 *   and applies whole versions only: a snapshot after each (re)started watch, then deltas.
 * - acks + health: one JSON value under `<fleet>-agents` / `<agentId>`, rewritten (latest state wins) after every
 *   ack/nack, every healthInterval, and with state "stopped" on a graceful stop.
 * - recipient lists: watches `<fleet>-recipients` (agent/control/nats-recipients.ts).
 * - commands: request/reply on `<fleet>.cmd.<agentId>`, protobuf Command -> CommandResult.
 * - shadow redundancy (with `shadow:` only): announced, and reported, in the agent's value; its assignment is
 *   watched at `<fleet>-shadow` / `<agentId>` and acked with the applied version in the next report.
 */
class NatsControlChannel implements ControlChannel {
  private nc: NatsConnection | undefined;
  private stopped = true;
  private running: Promise<void> | undefined;
  private wakeRun: (() => void) | undefined;
  private follower: VersionedFollower<RouteDelta | typeof TABLE_GONE> | undefined;
  private lists: VersionedFollower<RecipientDelta> | undefined;
  private shadowFollower: KvFollower | undefined;
  private sub: Subscription | undefined;
  private agentsKv: KV | undefined;
  private routesKv: KV | undefined;
  private watching = false;
  private readonly session: ControlSession;
  private healthTimer: NodeJS.Timeout | undefined;
  /** Latest-state writer: one put in flight; a report asked for meanwhile is written right after it. */
  private writing: Promise<void> | undefined;
  private dirty = false;
  private state: AgentValue['state'] = 'up';
  private readonly names: ReturnType<typeof bucketNames>;
  private readonly hostname = osHostname();

  constructor(
    handler: ControlHandler,
    private readonly nats: NatsSettings,
    private readonly healthIntervalMs: number,
    private readonly log: Logger,
    private readonly tuning: NatsChannelTuning,
  ) {
    this.session = new ControlSession(handler, log);
    this.session.watchShadow(() => void this.report());
    this.names = bucketNames(nats.fleet);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.state = 'up';
    this.healthTimer = setInterval(() => this.report(), this.healthIntervalMs);
    this.healthTimer.unref();
    this.running = this.run();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.healthTimer);
    this.wakeRun?.();
    await this.follower?.stop();
    await this.lists?.stop();
    await this.shadowFollower?.stop();
    this.sub?.unsubscribe();
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      // Tell the controllers we are gone (best effort: NATS may be down).
      this.state = 'stopped';
      await Promise.race([this.report(), new Promise((r) => setTimeout(r, 500))]);
      await nc.close().catch(() => undefined);
    }
    this.setConnected(false);
    // A connect still pending (NATS unreachable since start) is closed as soon as it completes.
    void this.running?.catch(() => undefined);
  }

  private async run(): Promise<void> {
    let nc: NatsConnection | undefined;
    for (let attempt = 0; !this.stopped && !nc; attempt++) {
      try {
        nc = await natsConnect(
          natsOptions(this.nats, `mxswitch-agent ${this.session.agentId}`, {
            inboxPrefix: agentInboxPrefix(this.nats.fleet, this.session.agentId),
            ...(this.tuning.reconnectTimeWaitMs !== undefined ? { reconnectTimeWait: this.tuning.reconnectTimeWaitMs, reconnectJitter: Math.round(this.tuning.reconnectTimeWaitMs / 2) } : {}),
            ...(this.tuning.pingIntervalMs !== undefined ? { pingInterval: this.tuning.pingIntervalMs } : {}),
            ...(this.tuning.connectTimeoutMs !== undefined ? { timeout: this.tuning.connectTimeoutMs } : {}),
          }, () => this.stopped),
        );
      } catch (err) {
        if (this.stopped) break;
        // waitOnFirstConnect retries unreachable servers by itself; this is a refusal (auth, TLS): retry slowly.
        this.log.error({ error: errorMessage(err), servers: this.nats.servers }, 'cannot connect to NATS; relaying goes on with the table in force');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(30_000, 1000 * 2 ** Math.min(attempt, 5)));
          this.wakeRun = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wakeRun = undefined;
      }
    }
    if (!nc) return;
    if (this.stopped) {
      await nc.close().catch(() => undefined);
      return;
    }
    this.nc = nc;
    this.log.info({ server: nc.getServer(), fleet: this.nats.fleet, version: this.session.ackedVersion }, 'connected to NATS');
    watchStatus(nc, this.log, {
      disconnect: () => this.setConnected(false),
      reconnect: () => {
        this.follower?.restart();
        this.lists?.restart();
        this.shadowFollower?.restart();
        this.report();
      },
    });
    const kvm = kvManager(nc);
    this.sub = nc.subscribe(commandSubject(this.nats.fleet, this.session.agentId), {
      callback: (err, msg) => {
        if (err) this.log.error({ error: errorMessage(err) }, 'command subscription failed');
        else this.onCommand(msg);
      },
    });
    const routesKv = async () => (this.routesKv ??= await kvm.open(this.names.routes));
    this.follower = new VersionedFollower(this.names.routes, routesKv, new RouteAssembler(), (update) => this.onRoutes(update), this.log, (watching) => {
      this.watching = watching && !nc.isClosed();
      this.setConnected(this.watching);
      if (this.watching) void this.learnCurrent(routesKv);
    });
    this.follower.start();
    this.lists = recipientFollower(this.names.recipients, async () => kvm.open(this.names.recipients), this.session, () => void this.report(), this.log);
    this.lists.start();
    if (this.session.shadowHello) {
      this.shadowFollower = new KvFollower(this.names.shadow, async () => kvm.open(this.names.shadow), this.session.agentId, (e) => this.onShadow(e), this.log);
      this.shadowFollower.start();
    }
    this.report();
  }

  private setConnected(connected: boolean): void {
    if (connected && !this.watching) return;
    if (this.session.setConnected(connected) && connected) this.log.info({ version: this.session.ackedVersion }, 'watching the route table in NATS');
  }

  /**
   * Tells the agent which table version is current in the bucket (0 when none was ever put), so it starts
   * delivering once the watch has brought that version. A watch cannot say "no value": hence the read beside it.
   */
  private async learnCurrent(open: () => Promise<KV>): Promise<void> {
    for (let attempt = 0; this.watching && !this.stopped; attempt++) {
      try {
        const e = await (await open()).get(VERSION_KEY);
        const version = e && e.operation === 'PUT' ? completeVersion(decodeRouteVersion(e)) : 0;
        if (!Number.isSafeInteger(version) || version < 0) throw new Error(`not a table version: ${String(version)}`);
        // Delivery starting is news the controller's status shows at once, not at the next health interval.
        if (this.session.current(version)) void this.report();
        return;
      } catch (err) {
        if (attempt === 0) this.log.warn({ error: errorMessage(err) }, 'cannot read the current route table version from NATS; retrying');
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** attempt)));
      }
    }
  }

  /** A whole route table version; resolves true when the agent refused it (nacked). */
  private async onRoutes(update: RouteDelta | typeof TABLE_GONE): Promise<boolean> {
    if (this.stopped) return false;
    if (update === TABLE_GONE) {
      this.log.warn('the route table was deleted from NATS; keeping the table in force');
      return false;
    }
    const outcome = await this.session.routeUpdate(update);
    if (!this.stopped) void this.report();
    return outcome.error !== undefined;
  }

  /** The controller's shadow assignment for this agent (each watch restart brings the latest again: apply skips it). */
  private onShadow(e: KvWatchEntry): void {
    if (this.stopped || e.operation !== 'PUT') return;
    let assignment: ShadowAssignment;
    try {
      assignment = ShadowAssignment.fromJSON(decodeJson<unknown>(e));
    } catch (err) {
      this.log.error({ error: errorMessage(err), revision: e.revision }, 'unreadable shadow assignment in NATS; keeping the one in force');
      return;
    }
    void this.session.shadowAssignment(pairingFromWire(assignment)).then(() => (this.stopped ? undefined : this.report()));
  }

  private onCommand(msg: Msg): void {
    let command: Command;
    try {
      command = Command.decode(msg.data);
    } catch (err) {
      msg.respond(CommandResult.encode({ commandId: '', ok: false, error: `undecodable command: ${errorMessage(err)}`, json: '' }).finish());
      return;
    }
    void this.session.command(command.minVersion, () => commandFromWire(command.kind)).then((result) => {
      msg.respond(CommandResult.encode({ commandId: command.commandId, ...result }).finish());
      void this.report();
    });
  }

  private value(): AgentValue {
    const h = this.session.health();
    return {
      agentId: this.session.agentId,
      region: this.session.region,
      hostname: this.hostname,
      bootId: this.session.bootId,
      appliedVersion: this.session.ackedVersion,
      recipientsVersion: this.session.recipientsVersion,
      nack: this.session.nack,
      state: this.state,
      healthIntervalMs: this.healthIntervalMs,
      health: h ? Health.toJSON(healthToWire(h)) : null,
      at: Date.now(),
      software: this.session.software,
      ...this.shadowValue(),
    };
  }

  /** Hello's shadow fields and the latest report, as the agent value carries them (nothing when shadowing is off). */
  private shadowValue(): Pick<AgentValue, 'shadow'> {
    const hello = this.session.shadowHello;
    if (!hello) return {};
    const status = this.session.shadowStatus();
    return { shadow: { address: hello.address, takeoverAfterMs: hello.takeoverAfterMs, queueId: hello.queueId, report: status ? shadowReportToWire(status) : null } };
  }

  /** Writes the agent's current state (acked version, nack, health); resolves when a write including it is done. */
  private report(): Promise<void> {
    const nc = this.nc;
    if (!nc || nc.isClosed() || (this.stopped && this.state !== 'stopped')) return Promise.resolve();
    this.dirty = true;
    this.writing ??= (async () => {
      try {
        while (this.dirty) {
          this.dirty = false;
          try {
            const kv = (this.agentsKv ??= await kvManager(nc).open(this.names.agents));
            await kv.put(this.session.agentId, encodeJson(this.value()));
          } catch (err) {
            // NATS down or slow: the next report (health interval, reconnect) carries the same state.
            this.log.debug({ error: errorMessage(err) }, 'agent state not written to NATS');
            break;
          }
        }
      } finally {
        this.writing = undefined;
      }
    })();
    return this.writing;
  }
}

/** A NATS control channel factory with non-default timings (tests). */
export function natsControlChannelWith(tuning: NatsChannelTuning = {}): ControlChannelFactory {
  return (handler, config, log) => {
    if (!config.nats) throw new MxError('CONFIG', 'controller.nats is not configured');
    return new NatsControlChannel(handler, config.nats, config.healthInterval, log.child({ component: 'control-nats' }), tuning);
  };
}

/** The control channel when `controller.nats` is configured. */
export const natsControlChannel: ControlChannelFactory = natsControlChannelWith();
