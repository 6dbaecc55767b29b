import { waitFor } from '../helpers/agent.js';
import { adminApi, agentsAt, last, startController, startFleetAgent } from '../helpers/controller.js';
import { percentile } from './load.js';

export interface ConvergenceResult {
  scenario: 'convergence';
  agents: number;
  steps: number;
  p50ms: number;
  p99ms: number;
}

/**
 * Time from the admin call to the last agent's ack of one coordinated step (alternating hold and release),
 * with `agents` real agents in this process talking gRPC to a real controller.
 */
export async function convergence(agents: number, steps: number): Promise<ConvergenceResult> {
  const ctl = await startController();
  const api = adminApi(ctl.address);
  const fleet = [];
  try {
    await api.setRoute('example.com', 'smtp:[127.0.0.1]:9');
    // The defaults' delivery poll and health report, not the tests' fast ones: 50 agents polling every 50 ms and
    // reporting every 200 ms in this one process measured the harness (1,000 writer-thread round trips a second).
    const realistic = { delivery: { pollInterval: '1s', resolvers: ['127.0.0.1:9'] }, controller: { healthInterval: '5s' } };
    for (let i = 0; i < agents; i++) fleet.push(await startFleetAgent(ctl.address, `bench-${i}`, realistic));
    await waitFor('every agent on the table', () => agentsAt(api, 1, agents), 60_000);
    const times: number[] = [];
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      const progress = await (i % 2 ? api.release('example.com') : api.hold('example.com'));
      if (last(progress).operation?.state !== 'done') throw new Error(`step ${i} failed: ${last(progress).operation?.error}`);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return { scenario: 'convergence', agents, steps, p50ms: percentile(times, 50), p99ms: percentile(times, 99) };
  } finally {
    api.close();
    await Promise.all(fleet.map((a) => a.cleanup()));
    await ctl.cleanup();
  }
}
