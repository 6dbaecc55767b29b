import type { Server as HttpServer } from 'node:http';
import type { Server } from '@grpc/grpc-js';
import type { ControllerConfig } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { startHttp } from '../shared/http.js';
import type { Logger } from '../shared/logger.js';
import { parseHostPort } from '../shared/units.js';
import { Access } from './adapters/grpc/access.js';
import { Dashboard } from './adapters/http/dashboard.js';
import { MemoryAgentDirectory, SqliteAgentDirectory } from './adapters/sqlite/agent-directory.js';
import { adminService } from './adapters/grpc/admin-service.js';
import { openControllerDb, type Db } from './adapters/sqlite/db.js';
import { grpcCredentials, serveGrpc, stopGrpc } from './adapters/grpc/server.js';
import { controllerMetrics } from './metrics.js';
import { NatsControlPlane } from './adapters/nats/plane.js';
import { SqliteOperationStore } from './adapters/sqlite/operation-store.js';
import { Orchestrator } from './orchestrator/runner.js';
import { Registry } from './core/registry.js';
import { RecipientStore } from './adapters/sqlite/recipient-store.js';
import { RouteStore } from './adapters/sqlite/route-store.js';
import type { AgentCommander, OperationStore, RecipientStoreApi, RouteStoreApi } from './core/ports.js';
import { Sessions } from './adapters/grpc/sessions.js';
import { ShadowPlan } from './core/shadow-plan.js';
import { SqliteShadowStore } from './adapters/sqlite/shadow-store.js';

/**
 * The controller's composition root: the admin service, the orchestrator and HTTP /metrics + /healthz over one of
 * two state/transport backends —
 * - gRPC (default): SQLite (routes, audit, agents, operations) and the agent session service;
 * - NATS (`nats` configured): JetStream KV buckets for routes, agents and operations, commands by request/reply; no
 *   local state, so several replicas can run against the same NATS.
 */
export class Controller {
  private db: Db | undefined;
  private nats: NatsControlPlane | undefined;
  private server: Server | undefined;
  private http: HttpServer | undefined;
  private dashboard: Dashboard | undefined;
  store!: RouteStoreApi;
  /** gRPC (SQLite) mode only. */
  recipients: RecipientStoreApi | undefined;
  registry!: Registry;
  /** gRPC mode only. */
  sessions: Sessions | undefined;
  /** Shadow pairing and takeovers (plan in controller.db, or in the NATS ops bucket). */
  shadow: ShadowPlan | undefined;
  /** Commands to agents, whatever the transport. */
  commands!: AgentCommander;
  operations!: OperationStore;
  orchestrator!: Orchestrator;
  /** Bound ports (useful with port 0 in tests). */
  grpcPort = 0;
  httpPort = 0;

  constructor(
    readonly config: ControllerConfig,
    private readonly log: Logger,
    /**
     * Tests shorten these. minStaleMs (NATS mode): reports older than this (at least) mean an agent is
     * disconnected. tombstoneVersions (SQLite): how long removals stay known for deltas (see RouteStore).
     */
    private readonly tuning: { minStaleMs?: number; tombstoneVersions?: number } = {},
  ) {}

  /** "host:port" clients should dial (the configured host with the bound port). */
  get address(): string {
    const { host } = parseHostPort(this.config.grpc.listen);
    const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
    return `${h}:${this.grpcPort}`;
  }

  async start(): Promise<void> {
    const { config, log } = this;
    const { host } = parseHostPort(config.grpc.listen);
    const creds = grpcCredentials(config, log);
    const access = new Access(config.tokens);
    if (config.nats) {
      this.nats = await NatsControlPlane.open(config.nats, log, this.tuning);
      this.store = this.nats.store;
      this.operations = this.nats.ops;
      this.commands = this.nats.commands;
      this.recipients = this.nats.recipients;
      this.registry = new Registry(new MemoryAgentDirectory(), config.expectedAgents, config.lostAfter, log);
      try {
        this.shadow = await this.nats.shadowPlan(this.registry, log.child({ component: 'shadow' }));
        await this.nats.start(this.registry, this.shadow);
      } catch (err) {
        await this.nats.stop().catch(() => undefined);
        this.nats = undefined;
        throw err;
      }
    } else {
      let db: Db;
      // The schema requires it without nats.
      const dataDir = config.dataDir!;
      try {
        db = this.db = openControllerDb(dataDir);
      } catch (err) {
        throw new ConfigError('dataDir', `cannot open ${dataDir}/controller.db: ${(err as Error).message}`);
      }
      const store = new RouteStore(db, this.tuning.tombstoneVersions ? { tombstoneVersions: this.tuning.tombstoneVersions } : {});
      this.store = store;
      // After the route store: it creates the audit table both write to.
      const recipients = (this.recipients = new RecipientStore(db));
      this.operations = new SqliteOperationStore(db);
      this.registry = new Registry(new SqliteAgentDirectory(db), config.expectedAgents, config.lostAfter, log);
      this.shadow = new ShadowPlan(new SqliteShadowStore(db), this.registry, log.child({ component: 'shadow' }));
      this.commands = this.sessions = new Sessions({
        shadow: this.shadow,
        store,
        recipients,
        registry: this.registry,
        access,
        log,
        heartbeatMs: config.grpc.heartbeatInterval,
        deadAfterMs: config.grpc.sessionTimeout,
      });
    }
    this.orchestrator = new Orchestrator({ ops: this.operations, store: this.store, registry: this.registry, commands: this.commands, stepTimeoutMs: config.stepTimeout, log });

    const admin = adminService({
      store: this.store,
      recipients: this.recipients,
      registry: this.registry,
      orchestrator: this.orchestrator,
      commands: this.commands,
      access,
      commandTimeoutMs: config.commandTimeout,
      log,
    });
    let server: Server;
    try {
      ({ server, port: this.grpcPort } = await serveGrpc({ config, creds, access, admin, sessions: this.sessions }));
    } catch (err) {
      this.db?.close();
      this.db = undefined;
      await this.nats?.stop().catch(() => undefined);
      this.nats = undefined;
      throw err;
    }
    this.server = server;
    this.registry.start();
    this.shadow?.start();
    this.sessions?.start();
    await this.orchestrator.resume();
    log.info({ listen: `${host}:${this.grpcPort}`, version: this.store.version, agents: this.registry.list().length, transport: this.nats ? 'nats' : 'grpc' }, 'controller listening');

    if (config.http) {
      const { server: http, port: httpPort } = await this.startHttp(config.http.listen, access);
      this.http = http;
      this.httpPort = httpPort;
    }
  }

  /** /metrics and /healthz, and the dashboard with its read-only API. */
  private async startHttp(listen: string, access: Access): Promise<{ server: HttpServer; port: number }> {
    const { store, recipients, registry, orchestrator, commands, log } = this;
    try {
      const dashboard = (this.dashboard = new Dashboard({ store, recipients, registry, orchestrator, commands, access, commandTimeoutMs: this.config.commandTimeout, log }));
      dashboard.start();
      const health = () => ({
        ok: true,
        detail: { version: store.version, agents: registry.list().length, connected: registry.list().filter((a) => a.state === 'connected').length },
      });
      return await startHttp(listen, controllerMetrics(store, registry, orchestrator), health, dashboard.handle);
    } catch (err) {
      await this.stop();
      throw new ConfigError('http.listen', `cannot listen on ${listen}: ${(err as Error).message}`);
    }
  }

  /** Graceful: running operations stay persisted (and resume at the next start), sessions close, then the db. */
  async stop(): Promise<void> {
    await this.orchestrator?.stop();
    this.sessions?.stop();
    this.shadow?.stop();
    this.registry?.stop();
    const server = this.server;
    if (server) await stopGrpc(server);
    this.server = undefined;
    this.dashboard?.stop();
    this.dashboard = undefined;
    const http = this.http;
    this.http = undefined;
    if (http) {
      const closed = new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      await closed;
    }
    await this.nats?.stop().catch((err: unknown) => this.log.warn({ err }, 'NATS connection not closed cleanly'));
    this.nats = undefined;
    this.db?.close();
    this.db = undefined;
  }
}
