import { randomUUID } from 'node:crypto';
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../../../shared/logger.js';
import { errorMessage, quoteInput } from '../../../shared/errors.js';
import {
  Command,
  RouteTable as RouteTableMsg,
  SessionResponse,
  type Hello,
  type SessionRequest,
} from '../../../proto/gen/mxswitch/v1/agent.js';
import { Outbox } from '../../../shared/outbox.js';
import { commandToWire, recipientDeltaToWire, routeDeltaToWire, routeToWire, type AgentCommand } from '../../../shared/wire.js';
import type { Access } from './access.js';
import { unauthenticated } from './grpc-util.js';
import type { AgentCommander, CommandOutcome, RouteDeltaSource, RouteStoreApi, Snapshot } from '../../core/ports.js';
import type { RecipientStore } from '../sqlite/recipient-store.js';
import type { Registry } from '../../core/registry.js';
import type { ShadowPlan } from '../../core/shadow-plan.js';

const TOMBSTONE_INTERVAL_MS = 60_000;

export interface SessionsOptions {
  /** The table of record; agents that take deltas get its changes since the version they have. */
  store: RouteStoreApi & RouteDeltaSource;
  /** Lists travel on the session as deltas from the version an agent has: the SQLite store keeps them. */
  recipients: RecipientStore;
  registry: Registry;
  access: Access;
  log: Logger;
  /** Application heartbeat period (controller -> agent). */
  heartbeatMs: number;
  /** A session with no message from its agent for this long is closed (the agent reconnects). */
  deadAfterMs: number;
  /** How long an agent has to send Hello after opening the stream. */
  helloTimeoutMs?: number;
  /** How often recipient-list tombstones all agents have applied are deleted. */
  tombstoneIntervalMs?: number;
  /** Shadow pairing: each member's assignment goes down its session, its reports come up. */
  shadow?: ShadowPlan;
}

type Call = ServerDuplexStream<SessionRequest, SessionResponse>;

export function tableMessage(s: Snapshot): SessionResponse {
  return SessionResponse.fromPartial({
    body: {
      $case: 'routeTable',
      value: RouteTableMsg.fromPartial({
        version: s.version,
        routes: s.routes.map(routeToWire),
      }),
    },
  });
}

/** Carries the current table version: an agent that has applied it knows its table is current and may deliver. */
const heartbeat = (tableVersion: number): SessionResponse =>
  SessionResponse.fromPartial({ body: { $case: 'heartbeat', value: { sentAtMs: Date.now(), tableVersion } } });

/** One agent's live stream: ordered, backpressured writes and the commands waiting for their results. */
class AgentSession {
  readonly sessionId = randomUUID();
  lastReceived = Date.now();
  private readonly outbox: Outbox<SessionResponse>;
  private readonly pending = new Map<string, { resolve: (o: CommandOutcome) => void; timer: NodeJS.Timeout }>();
  closed = false;
  /** The recipient-list version this agent has, or will have once what was sent is applied. */
  recipientsSent = 0;
  /** The agent takes RouteUpdate deltas (Hello.route_updates); otherwise it gets whole tables. */
  routeUpdates = false;
  /** The route table version this agent has, or will have once what was sent is applied. */
  routesSent = 0;
  /** The last route table version it acked. */
  routesAcked = 0;
  /** It refused an update: the next one is a snapshot, whatever version it is at. */
  routesResync = false;

  constructor(
    readonly agentId: string,
    private readonly call: Call,
  ) {
    // Only the newest route table matters (state of the world); heartbeats need not queue up either. Commands and
    // recipient-list deltas all go, in order.
    this.outbox = new Outbox<SessionResponse>(call, (m) => (m.body?.$case === 'command' || m.body?.$case === 'recipients' || m.body?.$case === 'routeUpdate' ? undefined : m.body?.$case));
  }

  get peer(): string {
    return this.call.getPeer();
  }

  send(msg: SessionResponse): void {
    this.outbox.send(msg);
  }

  command(command: AgentCommand, minVersion: number, timeoutMs: number): Promise<CommandOutcome> {
    if (this.closed) return Promise.resolve({ ok: false, error: 'agent disconnected', json: '' });
    const commandId = randomUUID();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(commandId);
        resolve({ ok: false, error: `no result within ${timeoutMs} ms`, json: '' });
      }, timeoutMs);
      this.pending.set(commandId, { resolve, timer });
      this.send(SessionResponse.fromPartial({ body: { $case: 'command', value: Command.fromPartial({ commandId, minVersion, kind: commandToWire(command) }) } }));
    });
  }

  result(commandId: string, outcome: CommandOutcome): boolean {
    const p = this.pending.get(commandId);
    if (!p) return false;
    clearTimeout(p.timer);
    this.pending.delete(commandId);
    p.resolve(outcome);
    return true;
  }

  /** Ends the stream (with a status when `code` is given) and fails the commands still waiting. */
  close(reason: string, code?: status): void {
    if (this.closed) return;
    this.closed = true;
    this.outbox.close();
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve({ ok: false, error: `agent disconnected before answering (${reason})`, json: '' });
    }
    this.pending.clear();
    try {
      if (code === undefined) this.call.end();
      else this.call.emit('error', Object.assign(new Error(reason), { code, details: reason }));
    } catch {
      // The stream is already gone.
    }
  }
}

/**
 * The AgentService.Session server: authenticates, registers the agent, pushes the whole route table on connect
 * and on every change, turns acks/health into registry updates and correlates command results by id.
 */
export class Sessions implements AgentCommander {
  private readonly live = new Map<string, AgentSession>();
  private timer: NodeJS.Timeout | undefined;
  private collector: NodeJS.Timeout | undefined;
  private readonly onChange = () => this.broadcast();
  private readonly onRecipients = () => {
    for (const s of this.live.values()) this.sendRecipients(s);
  };
  private readonly onShadow = () => {
    for (const s of this.live.values()) this.sendShadow(s);
  };

  constructor(private readonly opts: SessionsOptions) {}

  start(): void {
    this.opts.store.on('change', this.onChange);
    this.opts.recipients.on('change', this.onRecipients);
    this.opts.shadow?.on('change', this.onShadow);
    this.timer = setInterval(() => this.beat(), this.opts.heartbeatMs);
    this.timer.unref();
    this.collector = setInterval(() => this.collectTombstones(), this.opts.tombstoneIntervalMs ?? TOMBSTONE_INTERVAL_MS);
    this.collector.unref();
  }

  /** Removals every known agent has applied need not be kept for deltas any more. */
  collectTombstones(): number {
    const removed = this.opts.recipients.collectTombstones(this.opts.registry.list().map((a) => a.recipientsVersion));
    if (removed) this.opts.log.info({ removed, version: this.opts.recipients.version }, 'recipient-list tombstones collected');
    return removed;
  }

  /** Closes every session (the agents reconnect to whatever controller comes next). */
  stop(): void {
    clearInterval(this.timer);
    clearInterval(this.collector);
    this.opts.store.off('change', this.onChange);
    this.opts.recipients.off('change', this.onRecipients);
    this.opts.shadow?.off('change', this.onShadow);
    for (const s of this.live.values()) s.close('controller shutting down', status.UNAVAILABLE);
    for (const id of this.live.keys()) this.opts.registry.observe(id, { link: 'disconnected', error: 'controller shutting down' });
    this.live.clear();
  }

  isConnected(agentId: string): boolean {
    return this.live.has(agentId);
  }

  get connectedIds(): string[] {
    return [...this.live.keys()];
  }

  /** Runs a command on one agent; a missing session or timeout is an outcome, not an exception. */
  command(agentId: string, command: AgentCommand, minVersion: number, timeoutMs: number): Promise<CommandOutcome> {
    const s = this.live.get(agentId);
    if (!s) return Promise.resolve({ ok: false, error: 'agent not connected', json: '' });
    return s.command(command, minVersion, timeoutMs);
  }

  /** The grpc-js handler for AgentService.Session. */
  readonly handle = (call: Call): void => {
    const log = this.opts.log;
    const identity = this.opts.access.agent(call.metadata);
    if (!identity.ok) {
      log.warn({ peer: call.getPeer() }, 'agent session rejected: invalid or missing agent token');
      call.emit('error', unauthenticated('agent'));
      return;
    }
    let session: AgentSession | undefined;
    const helloTimer = setTimeout(() => {
      if (!session) {
        log.warn({ peer: call.getPeer() }, 'agent session closed: no Hello');
        call.emit('error', Object.assign(new Error('no Hello received'), { code: status.DEADLINE_EXCEEDED, details: 'no Hello received' }));
      }
    }, this.opts.helloTimeoutMs ?? 10_000);
    helloTimer.unref();

    const cleanup = (reason: string) => {
      clearTimeout(helloTimer);
      if (!session) return;
      const s = session;
      session = undefined;
      s.close(reason);
      // A replaced session must not mark its agent disconnected: the newer one is live.
      if (this.live.get(s.agentId) === s) {
        this.live.delete(s.agentId);
        this.opts.registry.observe(s.agentId, { link: 'disconnected', error: reason === 'stream ended by agent' ? '' : reason });
      }
    };

    call.on('data', (msg: SessionRequest) => {
      try {
        if (!session) {
          if (msg.body?.$case !== 'hello' || !msg.body.value.agentId) {
            call.emit('error', Object.assign(new Error('the first message must be Hello with an agent id'), { code: status.INVALID_ARGUMENT, details: 'the first message must be Hello with an agent id' }));
            return;
          }
          const mismatch = certificateMismatch(call, msg.body.value.agentId) ?? tokenMismatch(identity.agentId, msg.body.value.agentId);
          if (mismatch) {
            log.warn({ peer: call.getPeer(), agent: msg.body.value.agentId }, mismatch);
            call.emit('error', Object.assign(new Error(mismatch), { code: status.PERMISSION_DENIED, details: mismatch }));
            return;
          }
          clearTimeout(helloTimer);
          session = this.register(call, msg.body.value);
          return;
        }
        if (session.closed) return;
        this.receive(session, msg);
      } catch (err) {
        log.error({ err, agent: session?.agentId }, 'agent message could not be handled');
      }
    });
    call.on('end', () => cleanup('stream ended by agent'));
    call.on('cancelled', () => cleanup('stream cancelled'));
    call.on('error', (err: Error) => cleanup(`stream error: ${errorMessage(err)}`));
    call.on('close', () => cleanup('stream closed'));
  };

  private register(call: Call, hello: Hello): AgentSession {
    const { registry, store, log } = this.opts;
    const session = new AgentSession(hello.agentId, call);
    const previous = this.live.get(hello.agentId);
    this.live.set(hello.agentId, session);
    if (previous) {
      log.warn({ agent: hello.agentId, old: previous.peer, new: session.peer }, 'a newer session for this agent replaces the older one (two agents with one id?)');
      previous.close('replaced by a newer session for this agent', status.ABORTED);
    }
    const { agentId, appliedVersion, ...identity } = hello;
    const { recipientsVersion, softwareVersion, smtpListen, shadowAddress, shadowTakeoverAfterMs, shadowQueueId, shadowVersion: _shadowVersion, ...who } = identity;
    const info = registry.observe(agentId, { link: 'connected', identity: who, appliedVersion, recipientsVersion, software: { version: softwareVersion, smtpListen } })!;
    log.info({ agent: info.id, region: info.region, applied: hello.appliedVersion, peer: session.peer }, 'agent connected');
    const version = store.version;
    session.routeUpdates = hello.routeUpdates;
    session.routesSent = session.routesAcked = hello.appliedVersion;
    if (hello.appliedVersion > version) {
      // This database is older than what the agent applied (replaced or restored): never push a table the agent
      // must refuse; the next change gets a version above the agent's (and goes to it as a snapshot: the agent's
      // table at its version is not one this database wrote).
      store.raiseVersionFloor(hello.appliedVersion);
      session.routesResync = true;
      log.error({ agent: info.id, agentVersion: hello.appliedVersion, controllerVersion: version }, 'agent has a newer route table than this controller; not pushing until the next change');
    } else if (version > 0) {
      // Version 0 means no table was ever set here: leave agents on their bootstrap (config) routes.
      this.sendRoutes(session, new Map());
    }
    // After the table, so the agent learns "v is current" no sooner than it can have v.
    session.send(heartbeat(version));
    session.recipientsSent = hello.recipientsVersion;
    this.sendRecipients(session);
    // A new member changes the ring (and so everyone's assignment, sent on 'change'); its own goes out in any case.
    this.opts.shadow?.hello(agentId, shadowAddress ? { address: shadowAddress, takeoverAfterMs: shadowTakeoverAfterMs, queueId: shadowQueueId } : undefined);
    this.sendShadow(session);
    return session;
  }

  private receive(s: AgentSession, msg: SessionRequest): void {
    const { registry } = this.opts;
    s.lastReceived = Date.now();
    const body = msg.body;
    switch (body?.$case) {
      case 'ack':
        if (body.value.error) {
          // It kept the table it had: the next update starts from there, as a snapshot (whatever made it refuse,
          // a delta on top of a table we can no longer be sure of is not the way out).
          s.routesSent = s.routesAcked;
          s.routesResync = true;
        } else s.routesAcked = Math.max(s.routesAcked, body.value.version);
        registry.observe(s.agentId, body.value.error ? { nack: { version: body.value.version, error: body.value.error } } : { appliedVersion: body.value.version });
        break;
      case 'health':
        registry.observe(s.agentId, { health: body.value });
        break;
      case 'recipientsAck': {
        const { version, error } = body.value;
        if (error) {
          // It kept what it had: the next change is sent from there.
          s.recipientsSent = version;
          this.opts.log.warn({ agent: s.agentId, version, error }, 'agent refused a recipient-list update');
        }
        registry.observe(s.agentId, { recipientsVersion: version });
        break;
      }
      case 'commandResult': {
        const r = body.value;
        registry.observe(s.agentId, {});
        if (!s.result(r.commandId, { ok: r.ok, error: r.error, json: r.json })) this.opts.log.debug({ agent: s.agentId, commandId: r.commandId }, 'late command result ignored');
        break;
      }
      case 'heartbeat':
        registry.observe(s.agentId, {});
        break;
      case 'shadowReport':
        registry.observe(s.agentId, {});
        this.opts.shadow?.report(s.agentId, body.value);
        break;
      case 'hello':
        this.opts.log.warn({ agent: s.agentId }, 'second Hello on one session ignored');
        break;
      default:
        break;
    }
  }

  /** What the agent lacks of the recipient lists, as deltas (or a snapshot when its version is unknown here). */
  private sendRecipients(s: AgentSession): void {
    const delta = this.opts.recipients.since(s.recipientsSent);
    if (delta.version === s.recipientsSent && !delta.changes.length) return;
    for (const value of recipientDeltaToWire(delta)) s.send(SessionResponse.fromPartial({ body: { $case: 'recipients', value } }));
    s.recipientsSent = delta.version;
  }

  private sendShadow(s: AgentSession): void {
    const a = this.opts.shadow?.assignmentFor(s.agentId);
    if (a) s.send(SessionResponse.fromPartial({ body: { $case: 'shadowAssignment', value: a } }));
  }

  /**
   * What the agent lacks of the route table: the changes since the version it has (a snapshot when it is fresh,
   * refused the last update, or is further behind than the tombstones reach), or a whole RouteTable for an agent
   * that does not take deltas. `built` shares the messages between agents at the same version within one change.
   */
  private sendRoutes(s: AgentSession, built: Map<string, SessionResponse[]>): void {
    const { store } = this.opts;
    if (store.version === 0 || (s.routesSent === store.version && !s.routesResync)) return;
    const base = s.routeUpdates ? (s.routesResync ? 0 : s.routesSent) : -1;
    const key = String(base);
    let msgs = built.get(key);
    if (!msgs) {
      msgs = base < 0 ? [tableMessage(store.snapshot())] : routeDeltaToWire(store.since(base)).map((value) => SessionResponse.fromPartial({ body: { $case: 'routeUpdate', value } }));
      built.set(key, msgs);
    }
    for (const m of msgs) s.send(m);
    s.routesSent = store.version;
    s.routesResync = false;
  }

  private broadcast(): void {
    const built = new Map<string, SessionResponse[]>();
    for (const s of this.live.values()) this.sendRoutes(s, built);
  }

  private beat(): void {
    const now = Date.now();
    for (const s of [...this.live.values()]) {
      if (now - s.lastReceived > this.opts.deadAfterMs) {
        const reason = `no message from the agent for ${Math.round((now - s.lastReceived) / 1000)} s`;
        this.opts.log.warn({ agent: s.agentId }, `closing silent session: ${reason}`);
        this.live.delete(s.agentId);
        s.close(reason, status.UNAVAILABLE);
        this.opts.registry.observe(s.agentId, { link: 'disconnected', error: reason });
      } else {
        s.send(heartbeat(this.opts.store.version));
      }
    }
  }
}

/** A per-agent token (tokens.agents) is that agent's identity: it cannot speak for another id. */
function tokenMismatch(tokenAgent: string | undefined, agentId: string): string | undefined {
  return tokenAgent === undefined || tokenAgent === agentId ? undefined : `agent id ${quoteInput(agentId)} does not match its token (issued to ${quoteInput(tokenAgent)})`;
}

/**
 * Under mutual TLS the client certificate is the agent's identity: its common name must be the id the agent
 * claims, so one agent's credentials cannot report (or ack) for another. Without a client certificate, the
 * agent token is all there is.
 */
function certificateMismatch(call: Call, agentId: string): string | undefined {
  const cert = call.getAuthContext().sslPeerCertificate;
  const cn = cert?.subject?.CN;
  if (!cert || !cn) return undefined;
  const name = Array.isArray(cn) ? cn[0] : cn;
  return name === agentId ? undefined : `agent id ${quoteInput(agentId)} does not match its client certificate (CN=${name})`;
}
