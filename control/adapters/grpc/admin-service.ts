import type { ServerWritableStream, handleServerStreamingCall } from '@grpc/grpc-js';
import type { Logger } from '../../../shared/logger.js';
import { errorMessage, MxError, quoteInput } from '../../../shared/errors.js';
import { Outbox } from '../../../shared/outbox.js';
import {
  AgentCommandResult,
  AgentStatus,
  Operation,
  OperationProgress,
  WatchResponse,
  type AdminServiceServer,
  type FollowResponse,
  type QueueCommandRequest,
  type StatusResponse,
} from '../../../proto/gen/mxswitch/v1/admin.js';
import type { Route } from '../../../shared/routes.js';
import { commandFromWire, routeToWire, type AgentCommand } from '../../../shared/wire.js';
import { isReadOnlyCommand, type Access } from './access.js';
import { adminCalls } from './admin-calls.js';
import { recipientHandlers } from './recipients-service.js';
import { readOnlyDenied, toServiceError, unauthenticated } from './grpc-util.js';
import type { Orchestrator } from '../../orchestrator/runner.js';
import type { StartRequest } from '../../orchestrator/validate.js';
import type { AgentInfo, Registry } from '../../core/registry.js';
import { refuseSelfTarget } from '../../core/self-loop.js';
import { routeImportHandler } from './route-import-service.js';
import type { OperationRecord, Progress } from '../../core/model.js';
import type { AgentCommander, RecipientStoreApi, RouteStoreApi } from '../../core/ports.js';

/** `audit ls` without --limit, and the most one call returns. */
const DEFAULT_AUDIT_LIMIT = 50;
const MAX_AUDIT_LIMIT = 1000;

export interface AdminDeps {
  store: RouteStoreApi;
  /** Absent where lists are not kept (NATS mode): the recipient calls answer UNSUPPORTED. */
  recipients: RecipientStoreApi | undefined;
  registry: Registry;
  orchestrator: Orchestrator;
  commands: AgentCommander;
  access: Access;
  /** Default wait for queue command results. */
  commandTimeoutMs: number;
  log: Logger;
}

export function agentStatus(a: AgentInfo): AgentStatus {
  return AgentStatus.fromPartial({
    id: a.id,
    region: a.region,
    state: a.state,
    appliedVersion: a.appliedVersion,
    lastSeenMs: a.lastSeen,
    bootId: a.bootId,
    ...(a.health ? { health: a.health } : {}),
    expected: a.expected,
    lastError: a.lastError,
    recipientsVersion: a.recipientsVersion,
    softwareVersion: a.software.version,
    smtpListen: a.software.smtpListen,
    hostname: a.hostname,
    ...(a.shadow ? { shadow: a.shadow } : {}),
  });
}

export function operationMsg(op: OperationRecord): Operation {
  return Operation.fromPartial({
    id: op.id,
    kind: op.kind,
    match: op.match,
    target: op.target,
    state: op.state,
    step: op.step,
    error: op.error,
    startedAtMs: op.startedAt,
    finishedAtMs: op.finishedAt,
    excluded: op.excluded,
    recipients: op.recipients ?? [],
  });
}

export function progressMsg(p: Progress): OperationProgress {
  return OperationProgress.fromPartial({
    operation: operationMsg(p.operation),
    message: p.message,
    waitingVersion: p.waitingVersion,
    acked: p.acked,
    pending: p.pending,
    failed: p.failed,
    drain: p.drain.map((d) => ({ agentId: d.agentId, queued: d.queued, delivered: d.delivered })),
  });
}

/** The fleet as `Status` answers it; the HTTP API's /api/v1/status serves the same. */
export function fleetStatus(d: Pick<AdminDeps, 'store' | 'recipients' | 'registry' | 'orchestrator'>): StatusResponse {
  return {
    version: d.store.version,
    recipientsVersion: d.recipients?.version ?? 0,
    agents: d.registry.list().map(agentStatus),
    operations: d.orchestrator.list(20).map(operationMsg),
  };
}

function tlsPolicy(tls: string): 'required' | undefined {
  if (tls === 'required') return 'required';
  if (tls === '' || tls === 'may') return undefined;
  throw new MxError('INVALID_ARGUMENT', `tls must be "may" or "required", not ${quoteInput(tls)}`);
}

function verifyPolicy(verify: string): 'probe' | undefined {
  if (verify === 'probe') return 'probe';
  if (verify === '' || verify === 'none') return undefined;
  throw new MxError('INVALID_ARGUMENT', `verify must be "probe" or "none", not ${quoteInput(verify)}`);
}

/**
 * The AdminService (the CLI's API). Every call needs `authorization: Bearer <admin token>`. Operations stream
 * OperationProgress until they end; a failed operation ends the stream normally with a final progress whose
 * operation.state is "failed" (the report is in operation.error and progress.failed), so clients print it.
 */
export function adminService(d: AdminDeps): AdminServiceServer {
  const { store, registry, orchestrator, commands, log } = d;

  const calls = adminCalls(d.access, log);
  const { authorized, unary } = calls;

  /** Streams an operation's progress (latest first, then live) until it ends or the client goes away. */
  function follow<Res>(call: ServerWritableStream<unknown, Res>, id: string, wrap: (p: OperationProgress) => Res): void {
    const out = new Outbox<Res>(call);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      orchestrator.off('progress', onProgress);
      orchestrator.off('stopping', onStopping);
      out.end();
    };
    // The operation goes on after a restart; the client re-attaches with Follow.
    const onStopping = () => {
      if (ended) return;
      ended = true;
      orchestrator.off('progress', onProgress);
      call.emit('error', toServiceError(new MxError('UNAVAILABLE', `the controller is shutting down; operation ${id} resumes when it is back (mxswitch follow)`)));
    };
    const onProgress = (p: Progress) => {
      if (p.operation.id !== id || ended) return;
      out.send(wrap(progressMsg(p)));
      if (p.operation.state !== 'running') end();
    };
    const current = orchestrator.progress(id);
    if (!current) {
      call.emit('error', toServiceError(new MxError('NOT_FOUND', `no operation ${id}`)));
      return;
    }
    out.send(wrap(progressMsg(current)));
    if (current.operation.state !== 'running') return end();
    if (!orchestrator.isRunning(id)) {
      // Running in the database but not in this process (controller stopping): nothing more will come.
      return end();
    }
    orchestrator.on('progress', onProgress);
    orchestrator.on('stopping', onStopping);
    call.on('cancelled', () => {
      ended = true;
      orchestrator.off('progress', onProgress);
      orchestrator.off('stopping', onStopping);
      out.close();
    });
  }

  function operation<Req extends { actor?: string; exclude?: string[]; timeoutMs?: number }, Res>(
    method: string,
    toStart: (req: Req) => StartRequest,
    wrap: (p: OperationProgress) => Res,
  ): handleServerStreamingCall<Req, Res> {
    return (call) => {
      if (!authorized(call, method)) {
        call.emit('error', unauthenticated('admin'));
        return;
      }
      Promise.resolve()
        .then(() => {
          const req = toStart(call.request);
          return orchestrator.start({ ...req, actor: calls.actor(call) });
        })
        .then(
          (op: OperationRecord) => follow(call, op.id, wrap),
          (err: unknown) => {
            log.warn({ method, error: errorMessage(err) }, 'operation refused');
            call.emit('error', toServiceError(err));
          },
        );
    };
  }

  const queueCommand = (req: QueueCommandRequest): AgentCommand => {
    if (!req.kind) throw new MxError('INVALID_ARGUMENT', 'no command given (flush, queue_list, queue_show, queue_remove, queue_retry, queue_hold, queue_release, queue_shape or shadow_list)');
    return commandFromWire(req.kind);
  };

  return {
    ...recipientHandlers(d.recipients, calls, log),
    ...routeImportHandler(store, registry, calls, log),
    listRoutes: unary('ListRoutes', () => {
      const s = store.snapshot();
      return { version: s.version, routes: s.routes.map(routeToWire) };
    }),

    setRoute: unary('SetRoute', async (req, call) => {
      refuseSelfTarget(req.target, registry.list());
      const route: Route = { match: req.match, target: req.target, ...(req.hold ? { hold: true } : {}) };
      const tls = tlsPolicy(req.tls);
      if (tls) route.tls = tls;
      if (verifyPolicy(req.verify)) route.verify = 'probe';
      const actor = calls.actor(call);
      const version = await store.set(route, { expectedVersion: req.expectedVersion, actor });
      log.info({ match: req.match, target: req.target, hold: req.hold, version, actor }, 'route set');
      return { version };
    }),

    removeRoute: unary('RemoveRoute', async (req, call) => {
      const actor = calls.actor(call);
      const version = await store.remove(req.match, { expectedVersion: req.expectedVersion, actor });
      log.info({ match: req.match, version, actor }, 'route removed');
      return { version };
    }),

    status: unary('Status', () => fleetStatus(d)),

    listAudit: unary('ListAudit', async (req) => {
      const records = await store.audit(Math.min(req.limit || DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT));
      return {
        entries: records.map((r) => ({
          id: r.id,
          actor: r.actor,
          atMs: r.at,
          action: r.action,
          match: r.match,
          oldJson: r.old === null ? '' : JSON.stringify(r.old),
          newJson: r.new === null ? '' : JSON.stringify(r.new),
          version: r.version,
        })),
      };
    }),

    removeAgent: unary('RemoveAgent', (req) => {
      registry.remove(req.id);
      return {};
    }),

    watch: (call) => {
      if (!authorized(call, 'Watch')) {
        call.emit('error', unauthenticated('admin'));
        return;
      }
      // A slow watcher gets the latest state of each agent, not every intermediate report.
      const out = new Outbox<WatchResponse>(call, (m) => (m.event?.$case === 'agent' ? `agent:${m.event.value.id}` : m.event?.$case === 'routesChanged' ? 'routes' : undefined));
      const send = (event: WatchResponse['event']) => out.send(WatchResponse.fromPartial({ atMs: Date.now(), event }));
      const onAgent = (a: AgentInfo) => send({ $case: 'agent', value: agentStatus(a) });
      const onRemoved = (id: string) => send({ $case: 'agent', value: AgentStatus.fromPartial({ id, state: 'removed', expected: false }) });
      const onOperation = (op: OperationRecord) => send({ $case: 'operation', value: operationMsg(op) });
      const onRoutes = (s: { version: number }) => send({ $case: 'routesChanged', value: { version: s.version } });
      send({ $case: 'routesChanged', value: { version: store.version } });
      for (const a of registry.list()) onAgent(a);
      for (const op of orchestrator.runningOps()) onOperation(op);
      registry.on('agent', onAgent);
      registry.on('removed', onRemoved);
      orchestrator.on('operation', onOperation);
      store.on('change', onRoutes);
      const stop = () => {
        registry.off('agent', onAgent);
        registry.off('removed', onRemoved);
        orchestrator.off('operation', onOperation);
        orchestrator.off('stopping', onStopping);
        store.off('change', onRoutes);
        out.close();
      };
      const onStopping = () => {
        stop();
        call.emit('error', toServiceError(new MxError('UNAVAILABLE', 'the controller is shutting down')));
      };
      orchestrator.on('stopping', onStopping);
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
    },

    hold: operation('Hold', (r) => ({ kind: 'hold', match: r.match, exclude: r.exclude, timeoutMs: r.timeoutMs, actor: r.actor }), (progress) => ({ progress })),
    release: operation('Release', (r) => ({ kind: 'release', match: r.match, exclude: r.exclude, timeoutMs: r.timeoutMs, actor: r.actor }), (progress) => ({ progress })),
    switchover: operation(
      'Switchover',
      (r) => {
        refuseSelfTarget(r.target, registry.list());
        return { kind: 'switchover', match: r.match, target: r.target, exclude: r.exclude, timeoutMs: r.timeoutMs, waitDrained: r.waitDrained, actor: r.actor, recipients: r.recipients };
      },
      (progress) => ({ progress }),
    ),
    flush: operation('Flush', (r) => ({ kind: 'flush', match: r.match, exclude: r.exclude, timeoutMs: r.timeoutMs, actor: r.actor }), (progress) => ({ progress })),

    getOperation: unary('GetOperation', (req) => {
      const op = orchestrator.get(req.id);
      if (!op) throw new MxError('NOT_FOUND', `no operation ${req.id}`);
      return { operation: operationMsg(op) };
    }),

    follow: (call) => {
      if (!authorized(call, 'Follow')) {
        call.emit('error', unauthenticated('admin'));
        return;
      }
      follow(call, call.request.id, (progress): FollowResponse => ({ progress }));
    },

    queueCommand: unary('QueueCommand', async (req, call) => {
      const command = queueCommand(req);
      // A dry run of `route set` refuses what `route set` refuses.
      if (command.kind === 'routePreview' && 'set' in command.change) refuseSelfTarget(command.change.set.target, registry.list());
      if (!isReadOnlyCommand(command) && d.access.operator(call.metadata) !== 'admin') throw readOnlyDenied(`QueueCommand ${command.kind}`);
      let ids: string[];
      if (req.agentId) {
        if (!registry.get(req.agentId)) throw new MxError('NOT_FOUND', `no agent ${quoteInput(req.agentId)}`);
        ids = [req.agentId];
      } else {
        ids = registry.expectedIds();
      }
      // A flush must not deliver by a table older than the one in force here.
      const minVersion = command.kind === 'flush' ? store.version : 0;
      const timeoutMs = req.timeoutMs || d.commandTimeoutMs;
      const results = await Promise.all(
        ids.map(async (id) => {
          const r = await commands.command(id, command, minVersion, timeoutMs);
          return AgentCommandResult.fromPartial({ agentId: id, ok: r.ok, error: r.error, json: r.json });
        }),
      );
      return { results };
    }),
  };
}
