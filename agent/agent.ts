import { randomUUID } from 'node:crypto';
import { hostname as osHostname } from 'node:os';
import type { Server } from 'node:http';
import type { AgentConfig } from '../shared/config.js';
import { errorMessage, MxError } from '../shared/errors.js';
import { startHttp } from '../shared/http.js';
import type { Logger } from '../shared/logger.js';
import { followsDelta, type RouteDelta } from '../shared/route-delta.js';
import { RouteTable, type Route } from '../shared/routes.js';
import type { AgentCommand } from '../shared/wire.js';
import { changeQueue, listQueue, showMessage, type BulkAction } from './queue-ops.js';
import { coversMatch } from './queue-select.js';
import { queueShape } from './queue-shape.js';
import { previewRouteChange } from './route-preview.js';
import { DeliveryClient, type Outbound } from './delivery-client.js';
import { DeliveryGate, type DeliveryState } from './control/delivery-gate.js';
import { queueByRoute, type HealthSnapshot } from './health.js';
import { Ingress } from './ingress.js';
import { agentRegistry, deliveryLatency } from './metrics.js';
import { RouteJournal } from './route-state.js';
import { parseHostPort } from '../shared/units.js';
import { buildInfo } from '../shared/version.js';
import { RecipientLists, type ListChunk } from './recipients/lists.js';
import { createVerifier } from './verify/setup.js';
import { Router } from './router.js';
import { Scheduler } from './scheduler.js';
import { Spool } from './spool/spool.js';
import type { Pairing } from './shadow/assignment.js';
import { Shadowing, type ShadowStatus } from './shadow/shadowing.js';
import { listShadow } from './shadow/listing.js';

/** The queue changes a controller may ask for, and what each does to the selected recipients. */
const BULK_ACTIONS: Record<'queueRemove' | 'queueRetry' | 'queueHold' | 'queueRelease', BulkAction> = { queueRemove: 'remove', queueRetry: 'retry', queueHold: 'hold', queueRelease: 'release' };

/** What a control channel needs from the agent; the channel owns the transport, the agent owns the state. */
export interface ControlHandler {
  readonly agentId: string;
  readonly region: string;
  readonly bootId: string;
  readonly appliedVersion: number;
  /**
   * Applies a route update (a delta on top of exactly its base version, or a whole table); resolves with an error
   * text for a nack (the table in force stays), undefined for an ack.
   */
  applyTable(update: RouteDelta): Promise<string | undefined>;
  runCommand(minVersion: number, command: AgentCommand): unknown;
  health(): HealthSnapshot;
  setConnected(connected: boolean): void;
  /** The controller's current table version, as it just told (the agent is current once it has applied it). */
  /** The controller's current table version; true when that opened the delivery gate (health should go out now). */
  controllerCurrent(version: number): boolean;
  readonly recipientsVersion: number;
  /** What Hello tells about this agent: its software and its SMTP listener. */
  readonly software: { version: string; smtpListen: string };
  /** One chunk of a recipient-list update; the outcome once the update is whole (see RecipientLists.receive). */
  applyRecipients(chunk: ListChunk): { version: number; error?: string } | undefined;
  /** Shadow redundancy, when configured: what Hello announces, the assignment to apply, what to report. */
  readonly shadow: ShadowHandler | undefined;
}

export interface ShadowHandler {
  /** What Hello says: the address peers dial, how long this agent may be away, the assignment applied. */
  hello(): { address: string; takeoverAfterMs: number; version: number; queueId: string };
  apply(pairing: Pairing): Promise<void>;
  status(): ShadowStatus;
  /** Called when the report should go out now (reachability of a client changed). */
  onReport: (() => void) | undefined;
}

export interface ControlChannel {
  start(): void;
  stop(): Promise<void>;
}

export type ControlChannelFactory = (handler: ControlHandler, config: NonNullable<AgentConfig['controller']>, log: Logger) => ControlChannel;

/** Composition root of a relay agent: queue, router, ingress, scheduler, HTTP and the control channel. */
export class Agent implements ControlHandler {
  readonly bootId = randomUUID();
  readonly queue: Spool;
  readonly router: Router;
  /** The last applied table on disk (routes.json + routes.journal). */
  private readonly routeJournal: RouteJournal;
  /** The controller's recipient lists, as last applied (persisted in dataDir). */
  readonly recipients: RecipientLists;
  private readonly verification: ReturnType<typeof createVerifier>;
  readonly ingress: Ingress;
  readonly scheduler: Scheduler;
  private readonly delivery: Outbound;
  private readonly shadowing: Shadowing | undefined;
  private readonly startedAt = Date.now();
  private http: Server | undefined;
  private control: ControlChannel | undefined;
  private connected = false;
  private applying: Promise<unknown> = Promise.resolve();
  /** Present when a controller is configured: delivery waits for its current table (or the start-up grace). */
  private readonly gate: DeliveryGate | undefined;
  private readonly staticDelivery: DeliveryState = { open: true, reason: 'no controller configured: delivering with the configured routes', sinceMs: Date.now() };
  smtpPort = 0;
  httpPort = 0;

  constructor(
    readonly config: AgentConfig,
    private readonly log: Logger,
    private readonly controlFactory?: ControlChannelFactory,
  ) {
    const onRelease = (bytes: number) => log.warn({ dataDir: config.dataDir, bytes }, 'disk full: removed the ballast file so that delivered mail can leave the queue; it is written again when space returns');
    this.queue = new Spool(config.dataDir, { ballast: { onRelease } });
    this.routeJournal = new RouteJournal(config.dataDir, log);
    const persisted = this.routeJournal.load();
    this.router = new Router(persisted ?? new RouteTable(config.routes, 0));
    if (persisted) log.info({ version: persisted.version, routes: persisted.size }, 'starting with the last applied route table');
    const hostname = config.smtp.hostname ?? osHostname();
    this.delivery = new DeliveryClient({ config: config.delivery, heloName: hostname, options: config.delivery.resolvers ? { resolvers: config.delivery.resolvers } : {}, logLevel: log.level }, log);
    this.scheduler = new Scheduler(this.queue, this.router, this.delivery, config, hostname, log);
    this.recipients = new RecipientLists(config.dataDir);
    if (this.recipients.version) log.info({ version: this.recipients.version, domains: this.recipients.counts().length }, 'starting with the last applied recipient lists');
    this.verification = createVerifier(config, hostname, log);
    this.shadowing = config.shadow ? new Shadowing(config.shadow, this.queue, config.id, log.child({ component: 'shadow' })) : undefined;
    if (this.shadowing) this.shadowing.onAdopted = () => this.scheduler.kick();
    this.ingress = new Ingress({
      shadow: this.shadowing,
      config,
      queue: this.queue,
      router: this.router,
      recipients: this.recipients,
      verifier: this.verification.verifier,
      log,
      onQueued: () => this.scheduler.kick(),
    });
    if (config.controller && controlFactory) {
      this.gate = new DeliveryGate({ graceMs: config.controller.startupGrace, appliedVersion: this.appliedVersion, onOpen: () => this.scheduler.start(), log, shadow: !!config.shadow });
    }
  }

  get agentId(): string {
    return this.config.id;
  }
  get region(): string {
    return this.config.region;
  }
  get appliedVersion(): number {
    return this.router.table.version;
  }

  async start(): Promise<void> {
    const recovered = await this.queue.recoverInFlight();
    if (recovered) this.log.warn({ recovered }, 'recipients left in flight by a previous run are due again');
    if (this.shadowing) {
      await this.shadowing.start();
      this.log.info({ listen: this.shadowAddress }, 'shadow peer service listening');
    }
    // Mail is accepted from the first moment; delivery starts when the gate opens (at once without a controller).
    if (this.gate) this.gate.start();
    else this.scheduler.start();
    const addr = await this.ingress.listen();
    this.smtpPort = addr.port;
    this.log.info({ listen: `${addr.host}:${addr.port}`, version: this.appliedVersion }, 'smtp listening');
    if (this.config.http) {
      const registry = agentRegistry(() => this.health());
      const latency = deliveryLatency(registry);
      this.scheduler.onDelivered = (seconds) => latency.observe(seconds);
      const { server, port } = await startHttp(this.config.http.listen, registry, () => ({
        ok: true,
        detail: { id: this.config.id, version: this.appliedVersion, controllerConnected: this.connected, delivery: this.deliveryState },
      }));
      this.http = server;
      this.httpPort = port;
    }
    if (this.config.controller && this.controlFactory) {
      this.control = this.controlFactory(this, this.config.controller, this.log);
      this.control.start();
    }
  }

  /** Graceful: stop accepting, let SMTP sessions finish, let sends in flight finish, close the queue. */
  async stop(): Promise<void> {
    this.gate?.stop();
    await this.control?.stop();
    await this.ingress.close();
    await this.shadowing?.stop();
    await this.scheduler.stop();
    await this.delivery.close();
    this.verification.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    await this.queue.close();
  }

  /** SIGHUP in static mode: the config's routes replace the table (mail already queued follows them). */
  reloadStaticRoutes(routes: Route[]): void {
    if (this.config.controller) {
      this.log.warn('routes come from the controller; the config file routes are only a bootstrap table');
      return;
    }
    this.router.apply(new RouteTable(routes, 0));
    this.log.info({ routes: routes.length }, 'routes reloaded from config');
  }

  applyTable(update: RouteDelta): Promise<string | undefined> {
    // Tables apply one at a time, in arrival order.
    const result = this.applying.then(() => this.applyNow(update));
    this.applying = result;
    return result;
  }

  private async applyNow(update: RouteDelta): Promise<string | undefined> {
    const { version } = update;
    const current = this.router.table;
    if (version < current.version) return `version ${version} is older than the applied version ${current.version}`;
    let table: RouteTable = current;
    try {
      if (!followsDelta(update, current.version)) {
        throw new MxError('STALE_VERSION', `route update from version ${update.baseVersion} does not follow the applied version ${current.version}`);
      }
      // The same version is the same table (applied, not yet acked when the session restarted): nothing to write.
      if (version !== current.version) {
        table = current.withDelta(update);
        // Durable before it is in force: an acked table is always the one a restart finds.
        this.routeJournal.persist(update, table);
      }
    } catch (err) {
      this.log.error({ err, version }, 'route table refused');
      this.gate?.refused(version, errorMessage(err));
      return errorMessage(err);
    }
    if (table !== current) {
      this.router.apply(table);
      this.log.info({ version, routes: table.size, ...(update.snapshot ? {} : { changed: update.upserts.length + update.removals.length }) }, 'route table applied');
      // Acked only once the queue's route holds follow the table (a hold is in the queue before its ack).
      try {
        await this.scheduler.holdsReconciled();
      } catch (err) {
        return errorMessage(err);
      }
    }
    // The ack promises that nothing in flight still goes where this table no longer sends mail.
    await this.scheduler.settle(table);
    this.gate?.applied(version);
    return undefined;
  }

  async runCommand(minVersion: number, command: AgentCommand): Promise<unknown> {
    if (this.appliedVersion < minVersion) {
      throw new MxError('STALE_VERSION', `command needs route table version ${minVersion}, this agent has ${this.appliedVersion}`);
    }
    switch (command.kind) {
      case 'flush':
        return { due: await this.scheduler.flush(command.match ? coversMatch(command.match) : undefined) };
      case 'shadowList':
        return listShadow(this.queue, command.limit);
      case 'queueList':
        return listQueue(this.queue, { ...command.select, ...(command.limit ? { limit: command.limit } : {}) });
      case 'queueShow':
        return showMessage(this.queue, command.id, { body: command.body });
      case 'queueShape':
        return queueShape(this.queue, command.select);
      case 'routePreview':
        return previewRouteChange(this.queue, this.router.table, command.change);
      case 'routeTable':
        return { version: this.router.table.version, routes: this.router.table.routes };
      case 'queueRemove':
      case 'queueRetry':
      case 'queueHold':
      case 'queueRelease': {
        const result = await changeQueue(this.queue, BULK_ACTIONS[command.kind], command.select, { dryRun: command.dryRun });
        // Released and retried mail is due now: no wait for the next poll.
        if (!result.dryRun && result.recipients) this.scheduler.kick();
        return result;
      }
    }
  }

  setConnected(connected: boolean): void {
    this.connected = connected;
    this.gate?.reachable(connected);
  }

  get recipientsVersion(): number {
    return this.recipients.version;
  }

  get software(): { version: string; smtpListen: string } {
    const b = buildInfo();
    const { host } = parseHostPort(this.config.smtp.listen);
    return { version: `${b.version}${b.commit ? ` (${b.commit})` : ''}`, smtpListen: `${host.includes(':') ? `[${host}]` : host}:${this.smtpPort}` };
  }

  applyRecipients(chunk: ListChunk): { version: number; error?: string } | undefined {
    const outcome = this.recipients.receive(chunk);
    if (outcome?.error) this.log.error({ version: chunk.version, error: outcome.error }, 'recipient-list update refused; keeping the lists in force');
    else if (outcome) this.log.info({ version: outcome.version, domains: this.recipients.counts().length }, 'recipient lists applied');
    return outcome;
  }

  /** The address peers dial: shadow.advertise, or the listen host (smtp.hostname for a wildcard) with the bound port. */
  get shadowAddress(): string {
    const s = this.config.shadow;
    if (!s || !this.shadowing) return '';
    if (s.advertise) return s.advertise;
    const { host } = parseHostPort(s.listen);
    const name = host === '0.0.0.0' || host === '::' ? (this.config.smtp.hostname ?? osHostname()) : host;
    return `${name.includes(':') ? `[${name}]` : name}:${this.shadowing.port}`;
  }

  get shadow(): ShadowHandler | undefined {
    const s = this.shadowing;
    if (!s) return undefined;
    return {
      hello: () => ({ address: this.shadowAddress, takeoverAfterMs: this.config.shadow!.takeoverAfter, version: s.appliedVersion, queueId: this.queue.shadowViews.queueId() }),
      apply: async (pairing) => {
        await s.apply(pairing);
        this.gate?.shadowAssigned();
      },
      status: () => s.status(),
      get onReport() {
        return s.onReport;
      },
      set onReport(f) {
        s.onReport = f;
      },
    };
  }

  controllerCurrent(version: number): boolean {
    if (!this.gate || this.gate.isOpen) return false;
    this.gate.controllerCurrent(version);
    return this.gate.isOpen;
  }

  /** Whether this agent delivers now, and why. */
  get deliveryState(): DeliveryState {
    return this.gate?.status ?? this.staticDelivery;
  }

  health(): HealthSnapshot {
    const now = Date.now();
    const stats = this.queue.stats();
    const d = this.scheduler.counters;
    return {
      appliedVersion: this.appliedVersion,
      controllerConnected: this.connected,
      delivery: this.deliveryState,
      byState: stats.byState,
      total: stats.total,
      oldestAgeSeconds: stats.oldestArrival ? (now - stats.oldestArrival) / 1000 : 0,
      routes: queueByRoute(this.queue, this.router.table, now, stats.total),
      counters: { ...this.ingress.counters, delivered: d.delivered, deferred: d.deferred, bounced: d.bounced },
      // News only while mail waits: with the queue empty, status would show an error of mail long delivered.
      lastDeliveryError: stats.total ? d.lastError : '',
      diskFreeBytes: this.queue.diskFreeBytes(),
      uptimeSeconds: (now - this.startedAt) / 1000,
      ...(this.shadowing ? { shadow: { ...this.shadowing.status(), counters: { ...this.shadowing.counters } } } : {}),
    };
  }
}
