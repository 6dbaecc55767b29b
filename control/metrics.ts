import { Gauge, Registry as PromRegistry } from 'prom-client';
import { registerBuildInfo } from '../shared/build-info-metric.js';
import type { Orchestrator } from './orchestrator/runner.js';
import type { RouteStoreApi } from './core/ports.js';
import type { Registry } from './core/registry.js';

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
