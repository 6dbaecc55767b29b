import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import type { ControllerConfig } from '../../../shared/config.js';
import type { Logger } from '../../../shared/logger.js';
import { bucketNames, kvManager, natsConnect, natsOptions, watchStatus } from '../../../shared/nats.js';
import type { Registry } from '../../core/registry.js';
import { NatsAgentFeed, NatsCommands } from './agents.js';
import { NatsOperationStore } from './operation-store.js';
import { NatsRecipientStore } from './recipient-store.js';
import { NatsRouteStore } from './route-store.js';
import { NatsShadowPublisher, NatsShadowStore } from './shadow.js';
import { ShadowPlan } from '../../core/shadow-plan.js';

type NatsConfig = NonNullable<ControllerConfig['nats']>;

/**
 * The controller's NATS side: one connection, the three buckets (created when missing), and the pieces the
 * controller plugs into its seams — route store, operation store, agent feed (registry) and command transport.
 * The controller keeps no state of its own in this mode: replicas started against the same NATS agree.
 */
export class NatsControlPlane {
  feed: NatsAgentFeed | undefined;
  private publisher: NatsShadowPublisher | undefined;

  private constructor(
    readonly instanceId: string,
    readonly nc: NatsConnection,
    private readonly link: { connected: boolean },
    readonly store: NatsRouteStore,
    readonly ops: NatsOperationStore,
    readonly commands: NatsCommands,
    readonly recipients: NatsRecipientStore,
    private readonly agentsKv: KV,
    private readonly opsKv: KV,
    private readonly shadowKv: KV,
    private readonly minStaleMs: number,
    private readonly log: Logger,
  ) {}

  /** Connects (waiting for NATS if it is down) and opens the buckets, creating them when missing. */
  static async open(config: NatsConfig, log: Logger, extra: { minStaleMs?: number } = {}): Promise<NatsControlPlane> {
    const names = bucketNames(config.fleet);
    const instanceId = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    log.info({ servers: config.servers, fleet: config.fleet }, 'connecting to NATS');
    const nc = await natsConnect(natsOptions(config, `mxswitch-controller ${instanceId}`));
    try {
      const kvm = kvManager(nc);
      const [routes, agents, ops, recipients, shadow] = await Promise.all([
        kvm.create(names.routes, { history: 10, replicas: config.replicas, description: 'mxswitch routing table: r.<base64url match> per route and key "version"' }),
        kvm.create(names.agents, { history: 1, replicas: config.replicas, description: 'mxswitch agents: acked version and health, one key per agent' }),
        kvm.create(names.ops, { history: 1, replicas: config.replicas, description: 'mxswitch operations, locks and audit' }),
        kvm.create(names.recipients, { history: 1, replicas: config.replicas, description: 'mxswitch recipient lists: shards s.<domain>.<n> and key "version"' }),
        kvm.create(names.shadow, { history: 1, replicas: config.replicas, description: 'mxswitch shadow assignments: peer, clients, takeovers, one key per agent' }),
      ]);
      const link = { connected: true };
      const store = new NatsRouteStore(nc, () => link.connected, routes, ops, log);
      const opStore = new NatsOperationStore(ops, instanceId, config.operationLease, log);
      const lists = new NatsRecipientStore(nc, () => link.connected, recipients, ops, log);
      return new NatsControlPlane(instanceId, nc, link, store, opStore, new NatsCommands(nc, config.fleet), lists, agents, ops, shadow, extra.minStaleMs ?? 2000, log);
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
  }

  /** The shadow plan kept in `F-ops` (loaded now), its assignments published to `F-shadow` once `start` runs. */
  async shadowPlan(registry: Registry, log: Logger): Promise<ShadowPlan> {
    const store = await NatsShadowStore.open(this.opsKv, log);
    const plan = new ShadowPlan(store, registry, log);
    this.publisher = new NatsShadowPublisher(this.shadowKv, plan, store, log);
    return plan;
  }

  /**
   * Loads the table, the operations and the agents, then follows them and the recipient lists (watches restart on
   * every reconnect); agents' shadow announcements and reports go to `shadow`, its assignments to `F-shadow`.
   */
  async start(registry: Registry, shadow?: ShadowPlan): Promise<void> {
    const log = this.log;
    this.feed = new NatsAgentFeed(this.agentsKv, registry, this.store, log, this.minStaleMs, shadow);
    await this.store.start();
    this.recipients.start();
    await this.ops.start();
    await this.feed.start();
    await this.publisher?.start();
    watchStatus(this.nc, log, {
      disconnect: () => {
        this.link.connected = false;
      },
      reconnect: () => {
        this.link.connected = true;
        this.store.restart();
        this.recipients.restart();
        this.ops.restart();
        this.feed?.restart();
      },
    });
    log.info({ server: this.nc.getServer(), version: this.store.version, instance: this.instanceId }, 'NATS control plane ready');
  }

  async stop(): Promise<void> {
    await this.publisher?.stop();
    await this.feed?.stop();
    await this.ops.close();
    await this.recipients.stop();
    await this.store.stop();
    await this.nc.drain().catch(() => this.nc.close());
  }
}
