import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { credentials, Metadata, status, type ChannelCredentials, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type { AgentConfig } from '../../shared/config.js';
import { MxError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { Outbox } from '../../shared/outbox.js';
import { commandFromWire, healthToWire, recipientChunkFromWire, routeChunkFromWire, routeFromWire } from '../../shared/wire.js';
import { AgentServiceClient, SessionRequest, type Command, type RouteTable as RouteTableMsg, type SessionResponse } from '../../proto/gen/mxswitch/v1/agent.js';
import type { ControlChannel, ControlChannelFactory, ControlHandler } from '../agent.js';
import { ControlSession, type TableOutcome } from './session.js';
import { pairingFromWire } from '../shadow/assignment.js';
import { shadowReportToWire } from '../shadow/report.js';

type GrpcSettings = NonNullable<NonNullable<AgentConfig['controller']>['grpc']>;

export interface GrpcChannelTuning {
  /** Application heartbeat period (agent -> controller). Default 5 s. */
  heartbeatMs?: number;
  /** Reconnect when nothing came from the controller for this long. Default 20 s (the controller beats every 5 s). */
  silenceMs?: number;
  /** First reconnect delay; doubles per failed attempt up to backoffCapMs, with jitter. Defaults 100 ms / 5 s. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
}

function channelCredentials(grpc: GrpcSettings): ChannelCredentials {
  if (!grpc.tls) return credentials.createInsecure();
  const read = (f: string | undefined) => (f ? readFileSync(f) : null);
  return credentials.createSsl(read(grpc.tls.ca), read(grpc.tls.key), read(grpc.tls.cert));
}

/**
 * The agent end of AgentService.Session. It owns only the transport: the agent (ControlHandler) owns the state.
 * Whatever the controller does (down, slow, refusing the token), relaying goes on with the table in force: every
 * failure here ends in a reconnect with jittered exponential backoff, never in an exception out of this class.
 */
class GrpcControlChannel implements ControlChannel {
  private readonly client: AgentServiceClient;
  private call: ClientDuplexStream<SessionRequest, SessionResponse> | undefined;
  private outbox: Outbox<SessionRequest> | undefined;
  private stopped = true;
  private attempt = 0;
  private connected = false;
  private lastReceived = 0;
  private readonly session: ControlSession;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private beatTimer: NodeJS.Timeout | undefined;
  private readonly heartbeatMs: number;
  private readonly silenceMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffCapMs: number;

  constructor(
    handler: ControlHandler,
    private readonly grpc: GrpcSettings,
    private readonly healthIntervalMs: number,
    private readonly log: Logger,
    tuning: GrpcChannelTuning,
  ) {
    this.session = new ControlSession(handler, log);
    this.session.watchShadow(() => this.sendShadowReport());
    this.heartbeatMs = tuning.heartbeatMs ?? 5000;
    this.silenceMs = tuning.silenceMs ?? 20_000;
    this.backoffBaseMs = tuning.backoffBaseMs ?? 100;
    this.backoffCapMs = tuning.backoffCapMs ?? 5000;
    this.client = new AgentServiceClient(grpc.address, channelCredentials(grpc), {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': this.backoffBaseMs,
      'grpc.max_reconnect_backoff_ms': this.backoffCapMs,
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
    });
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.healthTimer = setInterval(() => this.sendHealth(), this.healthIntervalMs);
    this.healthTimer.unref();
    this.beatTimer = setInterval(() => this.beat(), this.heartbeatMs);
    this.beatTimer.unref();
    this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.healthTimer);
    clearInterval(this.beatTimer);
    const call = this.call;
    this.call = undefined;
    this.outbox?.close();
    if (call) {
      // Half-close so the controller records a clean disconnect, then give it a moment to answer.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 500);
        call.once('status', () => {
          clearTimeout(t);
          resolve();
        });
        call.once('error', () => undefined);
        try {
          call.end();
        } catch {
          resolve();
        }
      });
      call.cancel();
    }
    this.setConnected(false);
    this.client.close();
  }

  private connect(): void {
    if (this.stopped) return;
    const md = new Metadata();
    md.set('authorization', `Bearer ${this.grpc.token}`);
    let call: ClientDuplexStream<SessionRequest, SessionResponse>;
    try {
      call = this.client.session(md);
    } catch (err) {
      this.log.error({ err }, 'cannot open a controller session');
      this.scheduleReconnect();
      return;
    }
    this.call = call;
    this.lastReceived = Date.now();
    // Unsent health reports and heartbeats are superseded by newer ones; acks and results all go out in order.
    this.outbox = new Outbox<SessionRequest>(call, (m) => (m.body?.$case === 'health' || m.body?.$case === 'heartbeat' ? m.body.$case : undefined));
    this.outbox.send(
      SessionRequest.fromPartial({
        body: {
          $case: 'hello',
          value: { agentId: this.session.agentId, region: this.session.region, bootId: this.session.bootId, appliedVersion: this.session.ackedVersion, hostname: osHostname(), recipientsVersion: this.session.recipientsVersion, softwareVersion: this.session.software.version, smtpListen: this.session.software.smtpListen, routeUpdates: true, ...shadowHelloFields(this.session) },
        },
      }),
    );
    call.on('data', (msg: SessionResponse) => this.onMessage(call, msg));
    call.on('error', (err: ServiceError) => this.onEnd(call, err));
    call.on('end', () => this.onEnd(call));
  }

  private onEnd(call: ClientDuplexStream<SessionRequest, SessionResponse>, err?: ServiceError): void {
    if (call !== this.call) return;
    this.call = undefined;
    this.outbox?.close();
    this.outbox = undefined;
    this.setConnected(false);
    if (this.stopped) return;
    if (err?.code === status.UNAUTHENTICATED) this.log.error('the controller refused our token (controller.grpc.token); relaying goes on with the table in force');
    else this.log.warn({ code: err?.code, reason: err ? err.details || err.message : 'stream ended' }, 'controller session ended; reconnecting');
    try {
      call.cancel();
    } catch {
      // already gone
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const ceiling = Math.min(this.backoffCapMs, this.backoffBaseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    // Jitter (between half and all of the ceiling) keeps a fleet from reconnecting in lockstep after a restart.
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
    this.reconnectTimer.unref();
  }

  private setConnected(connected: boolean): void {
    this.connected = connected;
    this.session.setConnected(connected);
  }

  private send(call: ClientDuplexStream<SessionRequest, SessionResponse>, msg: SessionRequest): void {
    // A reply for a stream that has since ended is dropped: the next session starts from Hello again.
    if (call === this.call) this.outbox?.send(msg);
  }

  private onMessage(call: ClientDuplexStream<SessionRequest, SessionResponse>, msg: SessionResponse): void {
    if (call !== this.call) return;
    this.lastReceived = Date.now();
    if (!this.connected) {
      // The controller answered: the session works, so the next failure starts the backoff from the bottom.
      this.attempt = 0;
      this.setConnected(true);
      this.log.info({ address: this.grpc.address, version: this.session.ackedVersion }, 'connected to controller');
    }
    const body = msg.body;
    switch (body?.$case) {
      case 'routeTable':
        this.onTable(call, body.value);
        break;
      case 'routeUpdate':
        void this.session.routeChunk(routeChunkFromWire(body.value)).then((outcome) => outcome && this.acked(call, outcome));
        break;
      case 'command':
        this.onCommand(call, body.value);
        break;
      case 'heartbeat':
        // Delivery starting is news the controller's status shows at once, not at the next health interval.
        if (this.session.current(body.value.tableVersion)) this.sendHealth();
        break;
      case 'shadowAssignment':
        void this.session.shadowAssignment(pairingFromWire(body.value)).then((status) => {
          if (status) this.send(call, SessionRequest.fromPartial({ body: { $case: 'shadowReport', value: shadowReportToWire(status) } }));
          // An applied assignment may open the delivery gate.
          this.sendHealth();
        });
        break;
      case 'recipients':
        void this.session.recipients(recipientChunkFromWire(body.value)).then((outcome) => {
          if (outcome) this.send(call, SessionRequest.fromPartial({ body: { $case: 'recipientsAck', value: { version: outcome.version, error: outcome.error ?? '' } } }));
        });
        break;
      default:
        break;
    }
  }

  private onTable(call: ClientDuplexStream<SessionRequest, SessionResponse>, table: RouteTableMsg): void {
    void this.session.table(table.version, table.routes.map(routeFromWire)).then((outcome) => this.acked(call, outcome));
  }

  private acked(call: ClientDuplexStream<SessionRequest, SessionResponse>, { version, error }: TableOutcome): void {
    this.send(call, SessionRequest.fromPartial({ body: { $case: 'ack', value: { version, error: error ?? '' } } }));
    this.sendHealth();
  }

  private onCommand(call: ClientDuplexStream<SessionRequest, SessionResponse>, command: Command): void {
    void this.session.command(command.minVersion, () => commandFromWire(command.kind)).then((result) => {
      this.send(call, SessionRequest.fromPartial({ body: { $case: 'commandResult', value: { commandId: command.commandId, ...result } } }));
      this.sendHealth();
    });
  }

  private sendHealth(): void {
    const call = this.call;
    if (!call || !this.connected) return;
    const health = this.session.health();
    if (health) this.send(call, SessionRequest.fromPartial({ body: { $case: 'health', value: healthToWire(health) } }));
    this.sendShadowReport();
  }

  private sendShadowReport(): void {
    const call = this.call;
    const status = call && this.connected ? this.session.shadowStatus() : undefined;
    if (call && status) this.send(call, SessionRequest.fromPartial({ body: { $case: 'shadowReport', value: shadowReportToWire(status) } }));
  }

  private beat(): void {
    const call = this.call;
    if (!call) return;
    if (Date.now() - this.lastReceived > this.silenceMs) {
      this.log.warn({ silentMs: Date.now() - this.lastReceived }, 'controller silent; reconnecting');
      this.onEnd(call, Object.assign(new Error('controller silent'), { code: status.UNAVAILABLE, details: 'controller silent', metadata: new Metadata() }));
      return;
    }
    this.send(call, SessionRequest.fromPartial({ body: { $case: 'heartbeat', value: { sentAtMs: Date.now() } } }));
  }
}

/** Hello's shadow fields (none when shadowing is off). */
function shadowHelloFields(session: ControlSession): { shadowAddress: string; shadowTakeoverAfterMs: number; shadowVersion: number; shadowQueueId: string } | object {
  const h = session.shadowHello;
  return h ? { shadowAddress: h.address, shadowTakeoverAfterMs: h.takeoverAfterMs, shadowVersion: h.version, shadowQueueId: h.queueId } : {};
}

/** A gRPC control channel factory with non-default timings (tests, benchmarks). */
export function grpcControlChannelWith(tuning: GrpcChannelTuning = {}): ControlChannelFactory {
  return (handler, config, log) => {
    if (!config.grpc) throw new MxError('CONFIG', 'controller.grpc is not configured');
    return new GrpcControlChannel(handler, config.grpc, config.healthInterval, log.child({ component: 'control' }), tuning);
  };
}

/** The default control channel when `controller.grpc` is configured. */
export const grpcControlChannel: ControlChannelFactory = grpcControlChannelWith();
