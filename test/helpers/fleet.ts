import type { TestContext } from 'node:test';
import { waitFor } from './agent.js';
import { adminApi, agentsAt, deferrer } from './controller.js';
import { Sink } from './sink.js';
import type { Transport } from './transport.js';

export interface FleetOptions {
  /** Agent ids, started in parallel once the routes are set. */
  agents?: readonly string[];
  /** How many sinks (next hops) to start first. */
  sinks?: number;
  /** Routes set through the admin API before the agents start: match -> target (given the sinks). */
  routes?: (sinks: readonly Sink[]) => Record<string, string>;
  /** Controller config merged over the test defaults. */
  controller?: Record<string, unknown>;
  /** Config merged into every agent's. */
  agentConfig?: Record<string, unknown>;
}

/**
 * A controller, its agents and their next hops for one test, over `transport`; everything stops after the test
 * (agents first, then the controller, then the sinks). Resolves once every agent has applied the routes.
 */
export async function fleet(t: TestContext, transport: Transport, opts: FleetOptions = {}) {
  const defer = deferrer(t);
  const sinks = await Promise.all(Array.from({ length: opts.sinks ?? 0 }, () => new Sink().start()));
  defer(() => Promise.all(sinks.map((s) => s.stop())));
  const ctl = await transport.startController(opts.controller);
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  for (const [match, target] of Object.entries(opts.routes?.(sinks) ?? {})) await api.setRoute(match, target);
  const agents = await Promise.all((opts.agents ?? []).map((id) => transport.startAgent(ctl, id, opts.agentConfig)));
  defer(() => Promise.all(agents.map((a) => a.cleanup())));
  const version = ctl.controller.store.version;
  if (agents.length) await waitFor(`${agents.length} agents at version ${version}`, () => agentsAt(api, version, agents.length));
  return { ctl, api, agents, sinks, defer };
}
