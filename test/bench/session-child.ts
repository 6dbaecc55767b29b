/**
 * Many lightweight agents in one process for the control-scale bench: each is the REAL agent control channel
 * (agent/control/grpc.ts and session.ts: Hello, route deltas, acks, heartbeats, health) over its own gRPC stream,
 * with a minimal ControlHandler instead of a whole agent (no SMTP, no queue, no disk): its table is a RouteTable
 * that takes deltas as an agent's does (withDelta, only on top of their base). They start from the controller's
 * current table (read once per process through the admin API), as agents that were there before, so each change
 * reaches them as a delta. Each applied version is reported to the parent as {id, version, at} (Date.now()).
 *
 * argv: CONTROLLER_ADDRESS AGENT_TOKEN ADMIN_TOKEN COUNT ID_PREFIX
 */
import type { ControlHandler } from '../../agent/agent.js';
import { grpcControlChannelWith } from '../../agent/control/grpc.js';
import type { HealthSnapshot } from '../../agent/health.js';
import { AdminConnection } from '../../control/cli/admin-client.js';
import type { AgentConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { followsDelta, type RouteDelta } from '../../shared/route-delta.js';
import { RouteTable } from '../../shared/routes.js';
import { routeFromWire } from '../../shared/wire.js';

const [address, agentToken, adminToken, countText, prefix] = process.argv.slice(2) as [string, string, string, string, string];
const log = createLogger('bench-sessions', { level: 'silent', format: 'json' });
const admin = new AdminConnection({ controller: address }, { token: adminToken, deadlineMs: 120_000 });
const listed = await admin.listRoutes();
admin.close();
const base = new RouteTable(listed.routes.map(routeFromWire), listed.version);
const send = (m: unknown) => process.send!(m);

function health(version: number): HealthSnapshot {
  return {
    appliedVersion: version,
    controllerConnected: true,
    delivery: { open: true, reason: 'bench', sinceMs: Date.now() },
    byState: { queued: 0, inflight: 0, deferred: 0, held: 0 },
    total: 0,
    oldestAgeSeconds: 0,
    routes: [],
    counters: { accepted: 0, rejected: 0, delivered: 0, deferred: 0, bounced: 0 },
    lastDeliveryError: '',
    diskFreeBytes: 0,
    uptimeSeconds: 0,
  };
}

function handler(id: string): ControlHandler {
  let table = base;
  return {
    agentId: id,
    region: 'bench',
    bootId: `${id}-boot`,
    get appliedVersion() {
      return table.version;
    },
    async applyTable(update: RouteDelta) {
      if (!followsDelta(update, table.version)) return `update ${update.baseVersion} -> ${update.version} does not follow ${table.version}`;
      table = update.snapshot ? new RouteTable(update.upserts, update.version) : table.withDelta(update);
      send({ id, version: table.version, at: Date.now() });
      return undefined;
    },
    runCommand() {
      throw new Error('no commands in the bench');
    },
    health: () => health(table.version),
    setConnected: () => undefined,
    controllerCurrent: () => false,
    recipientsVersion: 0,
    software: { version: 'bench', smtpListen: '' },
    applyRecipients: (chunk) => ({ version: chunk.version }),
    shadow: undefined,
  };
}

const settings = { grpc: { address, token: agentToken }, healthInterval: 30_000 } as NonNullable<AgentConfig['controller']>;
const factory = grpcControlChannelWith({ heartbeatMs: 5000, silenceMs: 60_000, backoffBaseMs: 200, backoffCapMs: 2000 });
const channels = Array.from({ length: Number(countText) }, (_, i) => factory(handler(`${prefix}${i}`), settings, log));
for (const c of channels) c.start();
send({ ready: channels.length, version: base.version });
process.on('disconnect', () => void Promise.all(channels.map((c) => c.stop())).then(() => process.exit(0)));
