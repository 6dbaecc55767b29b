import { Server, ServerCredentials, status, type Metadata, type ServerErrorResponse, type ServerWritableStream } from '@grpc/grpc-js';
import {
  AdminServiceService,
  AgentStatus,
  Operation,
  OperationProgress,
  WatchResponse,
  type AdminServiceServer,
} from '../../proto/gen/mxswitch/v1/admin.js';
import type { Route } from '../../proto/gen/mxswitch/v1/agent.js';

/**
 * A scripted AdminService for CLI tests: deterministic answers (including failures) without a controller,
 * agents or timing. Every request is recorded with its method name.
 */

export const FAKE_TOKEN = 'fake-admin-token';

function err(code: status, details: string): ServerErrorResponse {
  return Object.assign(new Error(details), { code, details });
}

const op = (p: Partial<Operation>) => Operation.fromPartial({ id: 'op-1', state: 'running', startedAtMs: Date.now(), ...p });
const progress = (p: Parameters<typeof OperationProgress.fromPartial>[0]) => OperationProgress.fromPartial(p);

export const AGENTS = ['mx-a', 'mx-b'];

/** Scripted progress of a coordinated operation on MATCH; "fail.example" fails with mx-b pending. */
export function script(kind: string, match: string, target = '', waitDrained = false): OperationProgress[] {
  const base = { kind, match, target };
  if (match === 'fail.example') {
    return [
      progress({ operation: op({ ...base, step: 'hold' }), message: `hold ${match}: waiting for version 8`, waitingVersion: 8, acked: ['mx-a'], pending: ['mx-b'] }),
      progress({
        operation: op({ ...base, state: 'failed', step: 'hold', error: `${kind} failed at step hold: timed out waiting for mx-b (lost)`, finishedAtMs: Date.now() }),
        message: 'failed',
        failed: ['mx-b: timed out'],
      }),
    ];
  }
  if (match === 'cut.example') {
    // The stream ends while the operation still runs (controller shutting down).
    return [progress({ operation: op({ ...base, step: 'hold' }), message: 'waiting', waitingVersion: 8, acked: [], pending: AGENTS })];
  }
  const steps = kind === 'switchover' ? ['1/4 hold', '2/4 retarget', '3/4 release', '4/4 flush', ...(waitDrained ? ['5/5 drain'] : [])] : [kind];
  const out: OperationProgress[] = [];
  let v = 7;
  for (const step of steps) {
    v++;
    out.push(progress({ operation: op({ ...base, step }), message: `${step}: waiting for version ${v}`, waitingVersion: v, acked: ['mx-a'], pending: ['mx-b'] }));
    out.push(progress({ operation: op({ ...base, step }), message: `${step}: every agent applied version ${v}`, waitingVersion: v, acked: AGENTS, pending: [] }));
  }
  if (waitDrained) {
    out.push(progress({ operation: op({ ...base, step: '5/5 drain' }), message: 'drained', drain: [{ agentId: 'mx-a', queued: 0, delivered: 12 }, { agentId: 'mx-b', queued: 0, delivered: 3 }] }));
  }
  out.push(progress({ operation: op({ ...base, state: 'done', step: 'done', finishedAtMs: Date.now() }), message: `${kind} ${match} done` }));
  return out;
}

export interface FakeAdmin {
  address: string;
  requests: { method: string; request: unknown; token: string | undefined }[];
  routes: Route[];
  version: number;
  stop(): Promise<void>;
}

export async function startFakeAdmin(): Promise<FakeAdmin> {
  const state: FakeAdmin = { address: '', requests: [], routes: [], version: 0, stop: async () => {} };
  const authed = (method: string, request: unknown, md: Metadata): boolean => {
    const h = md.get('authorization')[0];
    const token = typeof h === 'string' ? h.replace(/^Bearer /, '') : undefined;
    state.requests.push({ method, request, token });
    return token === FAKE_TOKEN;
  };
  const unauth = () => err(status.UNAUTHENTICATED, 'invalid or missing admin token');

  const stream = (method: string) => (call: ServerWritableStream<{ match: string; target?: string; waitDrained?: boolean }, { progress: OperationProgress }>) => {
    if (!authed(method, call.request, call.metadata)) return call.emit('error', unauth());
    const r = call.request;
    if (r.match === 'busy.example') return call.emit('error', err(status.FAILED_PRECONDITION, 'expected agent mx-b is disconnected; use --exclude mx-b to proceed without it'));
    const steps = script(method.toLowerCase(), r.match, r.target ?? '', r.waitDrained ?? false);
    let i = 0;
    const timer = setInterval(() => {
      if (call.cancelled) return clearInterval(timer);
      const p = steps[i++];
      if (!p) {
        clearInterval(timer);
        call.end();
        return;
      }
      call.write({ progress: p });
    }, 20);
  };

  const impl: AdminServiceServer = {
    listRoutes(call, cb) {
      if (!authed('ListRoutes', call.request, call.metadata)) return cb(unauth());
      cb(null, { version: state.version, routes: state.routes });
    },
    setRoute(call, cb) {
      if (!authed('SetRoute', call.request, call.metadata)) return cb(unauth());
      const r = call.request;
      if (r.expectedVersion && r.expectedVersion !== state.version) return cb(err(status.ABORTED, `route table is at version ${state.version}, not ${r.expectedVersion}`));
      state.routes = [...state.routes.filter((x) => x.match !== r.match), { match: r.match, target: r.target, hold: r.hold, tls: r.tls, verify: r.verify }];
      cb(null, { version: ++state.version });
    },
    removeRoute(call, cb) {
      if (!authed('RemoveRoute', call.request, call.metadata)) return cb(unauth());
      const expected = call.request.expectedVersion;
      if (expected && expected !== state.version) return cb(err(status.ABORTED, `route table is at version ${state.version}, not ${expected}`));
      if (!state.routes.some((x) => x.match === call.request.match)) return cb(err(status.NOT_FOUND, `no route for ${call.request.match}`));
      state.routes = state.routes.filter((x) => x.match !== call.request.match);
      cb(null, { version: ++state.version });
    },
    status(call, cb) {
      if (!authed('Status', call.request, call.metadata)) return cb(unauth());
      const health = (queued: number) => ({
        appliedVersion: state.version,
        queues: [{ match: 'example.com', queued, deferred: 2, held: 1, inFlight: 0, oldestAgeSeconds: 90 }],
        counters: { accepted: 10, delivered: 7, deferred: 2, bounced: 1, rejected: 0 },
        lastDeliveryError: '',
        diskFreeBytes: 1e9,
        totalQueued: queued,
        oldestAgeSeconds: 90,
        uptimeSeconds: 100,
      });
      cb(null, {
        version: state.version,
        recipientsVersion: 0,
        agents: [
          AgentStatus.fromPartial({ id: 'mx-a', region: 'eu', state: 'connected', appliedVersion: state.version, lastSeenMs: Date.now(), expected: true, health: health(3) }),
          AgentStatus.fromPartial({ id: 'mx-b', region: 'us', state: 'lost', appliedVersion: Math.max(0, state.version - 1), lastSeenMs: Date.now() - 120_000, expected: true, lastError: 'heartbeat timeout' }),
        ],
        operations: [op({ id: 'op-9', kind: 'hold', match: 'example.com', step: 'hold' })],
      });
    },
    removeAgent(call, cb) {
      if (!authed('RemoveAgent', call.request, call.metadata)) return cb(unauth());
      if (!AGENTS.includes(call.request.id)) return cb(err(status.NOT_FOUND, `no agent ${call.request.id}`));
      cb(null, {});
    },
    watch(call) {
      if (!authed('Watch', call.request, call.metadata)) return call.emit('error', unauth());
      call.write(WatchResponse.fromPartial({ atMs: Date.now(), event: { $case: 'routesChanged', value: { version: state.version } } }));
      call.write(WatchResponse.fromPartial({ atMs: Date.now(), event: { $case: 'agent', value: AgentStatus.fromPartial({ id: 'mx-a', state: 'connected', appliedVersion: state.version }) } }));
      call.write(WatchResponse.fromPartial({ atMs: Date.now(), event: { $case: 'operation', value: op({ kind: 'hold', match: 'example.com', step: 'hold' }) } }));
      // stays open until the client cancels
    },
    hold: stream('Hold'),
    release: stream('Release'),
    switchover: stream('Switchover'),
    flush: stream('Flush'),
    getOperation(call, cb) {
      if (!authed('GetOperation', call.request, call.metadata)) return cb(unauth());
      if (call.request.id !== 'op-1') return cb(err(status.NOT_FOUND, `no operation ${call.request.id}`));
      cb(null, { operation: op({ id: 'op-1', kind: 'hold', match: 'example.com', state: 'done', step: 'done', finishedAtMs: Date.now() }) });
    },
    follow(call) {
      if (!authed('Follow', call.request, call.metadata)) return call.emit('error', unauth());
      if (call.request.id !== 'op-1') return call.emit('error', err(status.NOT_FOUND, `no operation ${call.request.id}`));
      for (const p of script('hold', 'example.com')) call.write({ progress: p });
      call.end();
    },
    // The CLI tests here do not cover recipient lists (test/recipients/ does, against a real controller).
    importRecipients(_call, cb) {
      cb(err(status.UNIMPLEMENTED, 'not in the fake'));
    },
    editRecipients(_call, cb) {
      cb(err(status.UNIMPLEMENTED, 'not in the fake'));
    },
    listRecipients(_call, cb) {
      cb(err(status.UNIMPLEMENTED, 'not in the fake'));
    },
    listAudit(_call, cb) {
      cb(err(status.UNIMPLEMENTED, 'not in the fake'));
    },
    queueCommand(call, cb) {
      if (!authed('QueueCommand', call.request, call.metadata)) return cb(unauth());
      const targets = call.request.agentId ? [call.request.agentId] : AGENTS;
      const entry = { id: 'Q1', sender: 's@x.test', arrivedAt: Date.now() - 60_000, ageSeconds: 60, size: 123, recipients: [{ rcpt: 'u@example.com', state: 'deferred', attempts: 1, nextAttempt: null, lastReply: '451 try later', route: 'example.com', hold: null }] };
      const answers: Record<string, unknown> = { queueList: { entries: [entry], more: 2 }, routeTable: { version: 0, routes: [] } };
      cb(null, {
        results: targets.map((id) =>
          id === 'mx-b' ? { agentId: id, ok: false, error: 'agent did not answer within 30s', json: '' } : { agentId: id, ok: true, error: '', json: JSON.stringify(answers[call.request.kind?.$case ?? ''] ?? { action: 'retry', dryRun: false, recipients: 1, messages: 1 }) },
        ),
      });
    },
  };

  const server = new Server();
  server.addService(AdminServiceService, impl);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  state.address = `127.0.0.1:${port}`;
  state.stop = () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  return state;
}
