import { rmSync } from 'node:fs';
import { credentials, Metadata, status, type ChannelCredentials, type ClientReadableStream } from '@grpc/grpc-js';
import { grpcControlChannelWith } from '../../agent/control/grpc.js';
import { AdminConnection, ControllerError } from '../../control/cli/admin-client.js';
import { Controller } from '../../control/controller.js';
import { AdminServiceClient, type OperationProgress, type QueueCommandRequest, type SetRouteRequest, type SwitchoverRequest } from '../../proto/gen/mxswitch/v1/admin.js';
import { controllerConfigSchema, parseConfig } from '../../shared/config.js';
import { UsageError } from '../../shared/errors.js';
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
export async function startController(extra: Record<string, unknown> = {}, tuning: { minStaleMs?: number; tombstoneVersions?: number } = {}) {
  let config = testControllerConfig(extra);
  const log = createLogger('test-controller', config.log);
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
      ...extra,
      controller: { grpc: { address, token }, healthInterval: '200ms', ...(extra.controller as object | undefined) },
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

/**
 * The CLI's own admin client (AdminConnection: bearer token, deadlines, errors as one-line ControllerError or
 * UsageError) with test-friendly arguments; `token` overrides the admin token for auth tests.
 */
export function adminApi(address: string, token = ADMIN_TOKEN, creds?: ChannelCredentials) {
  const c = new AdminConnection({ controller: address }, { token, ...(creds ? { credentials: creds } : {}) });
  const iterate = (stream: ClientReadableStream<{ progress?: OperationProgress | undefined }>) => collect(c.iterate(stream));
  const op = { exclude: [], timeoutMs: 0, actor: 'test' };
  return {
    client: c.client,
    close: () => c.close(),
    listRoutes: () => c.listRoutes(),
    setRoute: (match: string, target: string, extra: Partial<SetRouteRequest> = {}) => c.setRoute({ match, target, actor: 'test', ...extra }),
    removeRoute: (match: string, expectedVersion = 0) => c.removeRoute({ match, expectedVersion, actor: 'test' }),
    status: () => c.status(),
    removeAgent: (id: string) => c.removeAgent(id),
    getOperation: (id: string) => c.getOperation(id),
    queueCommand: (req: Partial<QueueCommandRequest>) => c.queueCommand(req, req.timeoutMs ?? 0),
    hold: (match: string, extra: Partial<SwitchoverRequest> = {}) => iterate(c.startOperation('hold', { match, ...op, ...extra })),
    release: (match: string, extra: Partial<SwitchoverRequest> = {}) => iterate(c.startOperation('release', { match, ...op, ...extra })),
    switchover: (match: string, target: string, extra: Partial<SwitchoverRequest> = {}) => iterate(c.startOperation('switchover', { match, target, waitDrained: false, ...op, ...extra })),
    flush: (match: string, extra: Partial<SwitchoverRequest> = {}) => iterate(c.startOperation('flush', { match, ...op, ...extra })),
    follow: (id: string) => iterate(c.follow(id)),
    watch: () => c.watch(),
  };
}

/**
 * How the admin client reports a gRPC status: INVALID_ARGUMENT as a UsageError (exit 2), every other code as a
 * ControllerError carrying it; `text` matches the one-line message.
 */
export const isStatus = (code: status, text?: RegExp) => (e: unknown) =>
  (code === status.INVALID_ARGUMENT ? e instanceof UsageError : e instanceof ControllerError && e.grpcCode === code) && (!text || text.test((e as Error).message));

export type AdminApi = ReturnType<typeof adminApi>;

/** Collects every progress message of an operation stream; resolves when it ends, rejects with its error. */
export async function collect(stream: AsyncIterable<{ progress?: OperationProgress | undefined }>): Promise<OperationProgress[]> {
  const out: OperationProgress[] = [];
  for await (const m of stream) if (m.progress) out.push(m.progress);
  return out;
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
