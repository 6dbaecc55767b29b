import { rmSync } from 'node:fs';
import { credentials, Metadata, type ChannelCredentials, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { grpcControlChannelWith } from '../../agent/control/grpc.js';
import { Controller } from '../../control/controller.js';
import {
  AdminServiceClient,
  type FlushRequest,
  type GetOperationResponse,
  type HoldRequest,
  type ListRoutesResponse,
  type OperationProgress,
  type QueueCommandRequest,
  type QueueCommandResponse,
  type ReleaseRequest,
  type RemoveAgentResponse,
  type RemoveRouteResponse,
  type SetRouteRequest,
  type SetRouteResponse,
  type StatusResponse,
  type SwitchoverRequest,
} from '../../proto/gen/mxswitch/v1/admin.js';
import { controllerConfigSchema, parseConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { startAgent, tempDir } from './agent.js';

export const AGENT_TOKEN = 'agent-token-0123456789';
export const ADMIN_TOKEN = 'admin-token-0123456789';

/** Controller config for tests: loopback port 0, quiet logs, short timeouts; `extra` is merged over it (top level). */
export function testControllerConfig(extra: Record<string, unknown> = {}) {
  return parseConfig(controllerConfigSchema, {
    dataDir: (extra.dataDir as string | undefined) ?? tempDir('mxs-ctl-'),
    tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN },
    log: { level: process.env.MXSWITCH_TEST_LOG ?? 'silent' },
    stepTimeout: '10s',
    ...extra,
    grpc: { listen: '127.0.0.1:0', heartbeatInterval: '500ms', sessionTimeout: '5s', ...(extra.grpc as object | undefined) },
  });
}

export type TestController = Awaited<ReturnType<typeof startController>>;

/** A started in-process controller; `restart()` stops it and starts a new one on the same dataDir and port. */
export async function startController(extra: Record<string, unknown> = {}, tuning: { minStaleMs?: number } = {}) {
  let config = testControllerConfig(extra);
  const log = createLogger('test-controller', config.log.level);
  const handle = {
    controller: new Controller(config, log, tuning),
    get config() {
      return config;
    },
    get address() {
      return handle.controller.address;
    },
    async restart() {
      const port = handle.controller.grpcPort;
      await handle.controller.stop();
      config = testControllerConfig({ ...extra, dataDir: config.dataDir, grpc: { ...(extra.grpc as object | undefined), listen: `127.0.0.1:${port}` } });
      handle.controller = new Controller(config, log, tuning);
      await handle.controller.start();
    },
    async cleanup(keepData = false) {
      await handle.controller.stop();
      if (!keepData && config.dataDir) rmSync(config.dataDir, { recursive: true, force: true });
    },
  };
  await handle.controller.start();
  return handle;
}

/** An in-process agent connected to `address` through the real gRPC channel (fast health and backoff). */
export function startFleetAgent(address: string, id: string, extra: Record<string, unknown> = {}, token = AGENT_TOKEN) {
  return startAgent(
    {
      id,
      region: 'test',
      controller: { grpc: { address, token }, healthInterval: '200ms' },
      ...extra,
    },
    grpcControlChannelWith({ heartbeatMs: 500, silenceMs: 5000, backoffBaseMs: 50, backoffCapMs: 500 }),
  );
}

export function adminClient(address: string, creds: ChannelCredentials = credentials.createInsecure()): AdminServiceClient {
  return new AdminServiceClient(address, creds);
}

export function auth(token = ADMIN_TOKEN): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

type Callback<Res> = (err: ServiceError | null, res: Res) => void;

function unary<Res>(fn: (cb: Callback<Res>) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn((err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** The admin API promisified for tests; `token` overrides the admin token for auth tests. */
export function adminApi(address: string, token = ADMIN_TOKEN, creds?: ChannelCredentials) {
  const c = adminClient(address, creds);
  const md = () => auth(token);
  const route = (match: string, target: string, extra: Partial<SetRouteRequest> = {}): SetRouteRequest => ({ match, target, hold: false, expectedVersion: 0, actor: 'test', tls: '', ...extra });
  return {
    client: c,
    close: () => c.close(),
    listRoutes: () => unary<ListRoutesResponse>((cb) => c.listRoutes({}, md(), cb)),
    setRoute: (match: string, target: string, extra: Partial<SetRouteRequest> = {}) => unary<SetRouteResponse>((cb) => c.setRoute(route(match, target, extra), md(), cb)),
    removeRoute: (match: string, expectedVersion = 0) => unary<RemoveRouteResponse>((cb) => c.removeRoute({ match, expectedVersion, actor: 'test' }, md(), cb)),
    status: () => unary<StatusResponse>((cb) => c.status({}, md(), cb)),
    removeAgent: (id: string) => unary<RemoveAgentResponse>((cb) => c.removeAgent({ id }, md(), cb)),
    getOperation: (id: string) => unary<GetOperationResponse>((cb) => c.getOperation({ id }, md(), cb)),
    queueCommand: (req: Partial<QueueCommandRequest>) => unary<QueueCommandResponse>((cb) => c.queueCommand({ agentId: '', timeoutMs: 0, ...req }, md(), cb)),
    hold: (match: string, extra: Partial<HoldRequest> = {}) => collect(c.hold({ match, exclude: [], timeoutMs: 0, actor: 'test', ...extra }, md())),
    release: (match: string, extra: Partial<ReleaseRequest> = {}) => collect(c.release({ match, exclude: [], timeoutMs: 0, actor: 'test', ...extra }, md())),
    switchover: (match: string, target: string, extra: Partial<SwitchoverRequest> = {}) =>
      collect(c.switchover({ match, target, exclude: [], timeoutMs: 0, waitDrained: false, actor: 'test', ...extra }, md())),
    flush: (match: string, extra: Partial<FlushRequest> = {}) => collect(c.flush({ match, exclude: [], timeoutMs: 0, actor: 'test', ...extra }, md())),
    follow: (id: string) => collect(c.follow({ id }, md())),
    watch: () => c.watch({}, md()),
  };
}

export type AdminApi = ReturnType<typeof adminApi>;

/** Collects every progress message of an operation stream; resolves when the stream ends, rejects on a status error. */
export function collect(stream: ClientReadableStream<{ progress?: OperationProgress | undefined }>): Promise<OperationProgress[]> {
  const out: OperationProgress[] = [];
  return new Promise((resolve, reject) => {
    stream.on('data', (m: { progress?: OperationProgress }) => {
      if (m.progress) out.push(m.progress);
    });
    stream.on('error', reject);
    stream.on('end', () => resolve(out));
  });
}

export function last<T>(xs: readonly T[]): T {
  if (xs.length === 0) throw new Error('empty stream');
  return xs[xs.length - 1]!;
}

/** True when at least `n` agents are connected with applied version >= `version`. */
export async function agentsAt(api: AdminApi, version: number, n: number): Promise<boolean> {
  const s = await api.status();
  return s.agents.filter((a) => a.state === 'connected' && a.appliedVersion >= version).length >= n;
}

/**
 * LIFO cleanup for a test: `defer(fn)` runs fns in reverse order of registration after the test, so agents
 * close their connections before the sinks and the controller they talk to are stopped.
 */
export function deferrer(t: { after: (fn: () => Promise<void>) => void }): (fn: () => unknown) => void {
  const stack: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of stack.reverse()) await fn();
  });
  return (fn) => void stack.push(fn);
}

/**
 * Samples every agent's applied version every 5 ms until `stop()` (or the test's end): per agent, the distinct
 * versions in the order seen (a test asserts they never decrease).
 */
export function sampleAppliedVersions(
  agents: readonly { agent: { agentId: string; appliedVersion: number } }[],
  defer: (fn: () => unknown) => void,
): { seen: Map<string, number[]>; stop: () => void } {
  const seen = new Map<string, number[]>();
  const sample = setInterval(() => {
    for (const a of agents) {
      const list = seen.get(a.agent.agentId) ?? [];
      if (list.at(-1) !== a.agent.appliedVersion) list.push(a.agent.appliedVersion);
      seen.set(a.agent.agentId, list);
    }
  }, 5);
  defer(() => clearInterval(sample));
  return { seen, stop: () => clearInterval(sample) };
}
