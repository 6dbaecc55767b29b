import { Counter, Gauge, Registry as PromRegistry } from 'prom-client';
import { registerBuildInfo } from '../shared/build-info-metric.js';
import type { Orchestrator } from './orchestrator/runner.js';
import type { RouteStoreApi } from './core/ports.js';
import type { AgentInfo, Registry } from './core/registry.js';

/** Prometheus view of the controller, read from live state at scrape time (its own registry, not the global one). */
export function controllerMetrics(store: RouteStoreApi, agents: Registry, orchestrator: Orchestrator): PromRegistry {
  const registry = new PromRegistry();
  registerBuildInfo(registry);
  new Gauge({
    name: 'mxswitch_controller_route_table_version',
    help: 'Current route table version',
    registers: [registry],
    collect() {
      this.set(store.version);
    },
  });
  new Gauge({
    name: 'mxswitch_controller_agents',
    help: 'Known agents by connection state',
    labelNames: ['state', 'expected'],
    registers: [registry],
    collect() {
      this.reset();
      for (const state of ['connected', 'disconnected', 'lost'] as const) {
        for (const expected of [true, false]) this.set({ state, expected: String(expected) }, 0);
      }
      for (const a of agents.list()) this.inc({ state: a.state, expected: String(a.expected) });
    },
  });
  new Gauge({
    name: 'mxswitch_controller_agent_applied_version',
    help: 'Route table version each agent has applied',
    labelNames: ['agent'],
    registers: [registry],
    collect() {
      this.reset();
      for (const a of agents.list()) this.set({ agent: a.id }, a.appliedVersion);
    },
  });
  new Gauge({
    name: 'mxswitch_controller_agent_queue_recipients',
    help: 'Recipients queued on each agent (last health report)',
    labelNames: ['agent'],
    registers: [registry],
    collect() {
      this.reset();
      for (const a of agents.list()) if (a.health) this.set({ agent: a.id }, a.health.totalQueued);
    },
  });
  // From each agent's last health report, so one scrape of the controller serves the whole fleet's dashboards
  // and alerts (agents' own /metrics need not be reachable).
  const perAgent = (name: string, help: string, read: (a: AgentInfo) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['agent'],
      registers: [registry],
      collect() {
        this.reset();
        for (const a of agents.list()) {
          const v = read(a);
          if (v !== undefined) this.set({ agent: a.id }, v);
        }
      },
    });
  perAgent('mxswitch_controller_agent_connected', '1 when the agent is connected, 0 when disconnected or lost', (a) => (a.state === 'connected' ? 1 : 0));
  perAgent('mxswitch_controller_agent_queue_oldest_seconds', 'Age of the oldest message queued on each agent (last health report)', (a) => a.health?.oldestAgeSeconds);
  perAgent('mxswitch_controller_agent_disk_free_bytes', 'Free space where each agent keeps its queue (last health report)', (a) => a.health?.diskFreeBytes);
  new Gauge({
    name: 'mxswitch_controller_agent_route_queue_recipients',
    help: 'Recipients queued on each agent by route (match) and state (last health report)',
    labelNames: ['agent', 'route', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const a of agents.list()) {
        for (const q of a.health?.queues ?? []) {
          for (const [state, n] of [['queued', q.queued], ['deferred', q.deferred], ['held', q.held], ['inflight', q.inFlight]] as const) this.set({ agent: a.id, route: q.match, state }, n);
        }
      }
    },
  });
  for (const outcome of ['delivered', 'deferred', 'bounced'] as const) {
    new Counter({
      name: `mxswitch_controller_agent_${outcome}_total`,
      help: `Recipients ${outcome} by each agent since its start (last health report; resets when the agent restarts)`,
      labelNames: ['agent'],
      registers: [registry],
      collect() {
        this.reset();
        for (const a of agents.list()) if (a.health?.counters) this.inc({ agent: a.id }, a.health.counters[outcome]);
      },
    });
  }
  new Gauge({
    name: 'mxswitch_controller_fleet_queue_recipients',
    help: 'Recipients queued across the fleet (sum of the last health reports)',
    registers: [registry],
    collect() {
      this.set(agents.list().reduce((n, a) => n + (a.health?.totalQueued ?? 0), 0));
    },
  });
  new Gauge({
    name: 'mxswitch_controller_operations',
    help: 'Orchestration operations by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      for (const [state, n] of Object.entries(orchestrator.countByState())) this.set({ state }, n);
    },
  });
  return registry;
}
