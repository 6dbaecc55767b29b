import { natsControlChannelWith } from '../../agent/control/nats.js';
import { startAgent } from './agent.js';
import { AGENT_TOKEN, startController, startFleetAgent, type TestController } from './controller.js';
import { NatsServer } from './nats-server.js';

/**
 * How agents reach the controller in a behavioural test: the same test body runs over gRPC (agents hold a session
 * to the controller) and over NATS (controller and agents share JetStream KV buckets and request/reply subjects).
 */
export interface Transport {
  readonly name: 'grpc' | 'nats';
  startController(extra?: Record<string, unknown>): Promise<TestController>;
  startAgent(ctl: TestController, id: string, extra?: Record<string, unknown>): ReturnType<typeof startAgent>;
  /** The agent's `controller.grpc` or `controller.nats` for `ctl`, for a test that sets other controller keys. */
  agentController(ctl: TestController): Record<string, unknown>;
}

export const grpcTransport: Transport = {
  name: 'grpc',
  startController: (extra = {}) => startController(extra),
  startAgent: (ctl, id, extra = {}) => startFleetAgent(ctl.address, id, extra),
  agentController: (ctl) => ({ grpc: { address: ctl.address, token: AGENT_TOKEN } }),
};

let fleets = 0;

/** A fresh fleet name per controller, so tests sharing one nats-server never see each other's buckets. */
export function natsTransport(server: NatsServer, natsExtra: Record<string, unknown> = {}): Transport {
  return {
    name: 'nats',
    startController: (extra = {}) => {
      const fleet = (extra.fleet as string | undefined) ?? `t${process.pid}x${++fleets}`;
      const { fleet: _f, ...rest } = extra;
      return startController({ ...rest, nats: { servers: [server.url], fleet, ...natsExtra, ...(rest.nats as object | undefined) } }, { minStaleMs: 1000 });
    },
    startAgent: (ctl, id, extra = {}) => startNatsAgent(server, ctl.config.nats!.fleet, id, extra),
    agentController: (ctl) => ({ nats: { servers: [server.url], fleet: ctl.config.nats!.fleet } }),
  };
}

/** An in-process agent on the NATS control channel (fast health and reconnects). */
export function startNatsAgent(server: NatsServer | string, fleet: string, id: string, extra: Record<string, unknown> = {}, nats: Record<string, unknown> = {}) {
  const url = typeof server === 'string' ? server : server.url;
  return startAgent(
    {
      id,
      region: 'test',
      controller: { nats: { servers: [url], fleet, ...nats }, healthInterval: '200ms' },
      ...extra,
    },
    natsControlChannelWith({ reconnectTimeWaitMs: 100, pingIntervalMs: 2000, connectTimeoutMs: 1000 }),
  );
}

/** One nats-server per test file, stopped (by PID) after the file's tests. */
export async function natsServerFor(after: (fn: () => Promise<void>) => void, config?: string): Promise<NatsServer> {
  const server = await NatsServer.start(config === undefined ? {} : { config });
  after(() => server.stop());
  return server;
}
