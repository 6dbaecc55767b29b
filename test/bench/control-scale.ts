import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { AdminConnection } from '../../control/cli/admin-client.js';
import type { RouteDelta } from '../../shared/route-delta.js';
import type { Route } from '../../shared/routes.js';
import { waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN, adminApi, startController, startFleetAgent } from '../helpers/controller.js';
import { REPO } from '../helpers/process.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { percentile } from './load.js';

export interface ControlScaleResult {
  scenario: 'control-scale';
  routes: number;
  /** Median SetRoute (admin call -> stored) at 100 routes and at `routes` routes, and their ratio (target <= 1.5). */
  setRouteSmallMs: number;
  setRouteLargeMs: number;
  setRouteRatio: number;
  /** Bytes the controller sent one agent for one change at `routes` (median of 5; target < 10 KB). */
  changeBytes: number;
  /** A real agent's apply + durable persist (journal) + ack readiness of one change at `routes` (median, p99; target < 5 ms). */
  applyMs: number;
  applyP99Ms: number;
  /** `route import` of `routes` routes (one version) until every agent (2 real ones) acked it (target < 10 s). */
  importMs: number;
  /** Simulated agents (real control session code) in `processes` child processes. */
  sessions: number;
  processes: number;
  changes: number;
  /** Admin call -> each simulated agent's apply of one change, over every change and agent (target p99 < 1 s). */
  convergenceP50Ms: number;
  convergenceP99Ms: number;
  convergenceMaxMs: number;
}

const T = (n: number) => `smtp:[192.0.2.${n}]:25`;
const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);

/**
 * Control plane at scale, on one SQLite controller in this process: SetRoute latency at 100 vs `routes` routes,
 * the bytes and the agent's apply + persist of one change, the import of `routes` routes acked by two real agents,
 * and the convergence of one change across `sessions` simulated agents (test/bench/session-child.ts: the real
 * gRPC control session, a minimal handler) in `processes` children. Bounded: `setRoutes` calls per size, `changes`
 * changes for convergence, every wait with a timeout.
 */
export async function controlScale(routes: number, sessions: number, processes: number, changes: number, setRoutes = 30): Promise<ControlScaleResult> {
  const ctl = await startController({ stepTimeout: '60s' });
  const api = adminApi(ctl.address);
  const admin = new AdminConnection({ controller: ctl.address }, { token: ADMIN_TOKEN, deadlineMs: 120_000 });
  const proxy = await new TcpProxy(ctl.controller.grpcPort).start();
  // Health at the default interval (the tests' 200 ms would make these in-process agents share the controller's loop more).
  const agentAt = (address: string, id: string) => startFleetAgent(address, id, { controller: { grpc: { address, token: AGENT_TOKEN }, healthInterval: '5s' } });
  const real = [await agentAt(proxy.address, 'real-0'), await agentAt(ctl.address, 'real-1')];
  const children: ChildProcess[] = [];
  const applied: number[] = [];
  const watched = real[0]!.agent;
  const apply = watched.applyTable.bind(watched);
  watched.applyTable = async (update: RouteDelta) => {
    const t0 = performance.now();
    const out = await apply(update);
    if (!update.snapshot) applied.push(performance.now() - t0);
    return out;
  };
  const allAt = async (version: number, n: number) => (await api.status()).agents.filter((a) => a.appliedVersion >= version).length >= n;
  const setRouteTimes = async (what: string) => {
    const times: number[] = [];
    for (let i = 0; i < setRoutes; i++) {
      const t0 = performance.now();
      await api.setRoute(`${what}.example`, T(1 + (i % 2)));
      times.push(performance.now() - t0);
    }
    await waitFor('the agents on the last change', () => real.every((a) => a.agent.router.table.version === ctl.controller.store.version), 60_000);
    return median(times);
  };
  try {
    const small: Route[] = Array.from({ length: 100 }, (_, i) => ({ match: `d${i}.example`, target: T(3) }));
    await admin.importRoutes(small.slice(0, 99), { replace: false, dryRun: false, expectedVersion: 0, actor: 'bench' });
    const setRouteSmallMs = await setRouteTimes('d99');

    const big: Route[] = Array.from({ length: routes - 100 }, (_, i) => ({ match: `user.${i}@big${i % 100}.example`, target: T(4 + (i % 50)) }));
    const t0 = performance.now();
    const imported = await admin.importRoutes(big, { replace: false, dryRun: false, expectedVersion: 0, actor: 'bench' });
    await waitFor('both agents on the import', () => allAt(imported.version, 2), 120_000);
    const importMs = performance.now() - t0;
    applied.length = 0;
    const setRouteLargeMs = await setRouteTimes('d98');

    const bytes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = proxy.bytesDown;
      const v = (await api.setRoute(`user.${i}@big${i}.example`, T(60))).version;
      await waitFor('the proxied agent on the change', () => watched.router.table.version === v, 30_000);
      bytes.push(proxy.bytesDown - before);
    }
    const applySorted = [...applied].sort((a, b) => a - b);

    // Convergence: `sessions` simulated agents, already at the current version (they get each change as a delta).
    const per = Math.ceil(sessions / processes);
    const at = new Map<number, number[]>();
    let ready = 0;
    for (let p = 0; p < processes; p++) {
      const n = Math.min(per, sessions - p * per);
      const child = fork(join(REPO, 'test', 'bench', 'session-child.ts'), [ctl.address, AGENT_TOKEN, ADMIN_TOKEN, String(n), `sim-${p}-`], { execArgv: ['--import', 'tsx'], cwd: REPO, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      children.push(child);
      child.on('message', (m: { ready?: number; version?: number; at?: number }) => {
        if (m.ready !== undefined) ready++;
        else at.set(m.version!, [...(at.get(m.version!) ?? []), m.at!]);
      });
    }
    await waitFor('every child has its sessions open', () => ready === processes, 120_000);
    const current = ctl.controller.store.version;
    await waitFor('every simulated agent connected at the current version', () => allAt(current, sessions + 2), 120_000);
    const samples: number[] = [];
    for (let i = 0; i < changes; i++) {
      const start = Date.now();
      const v = (await api.setRoute(`user.${100 + i}@big${i % 100}.example`, T(61 + (i % 2)))).version;
      await waitFor(`every simulated agent on change ${i}`, () => (at.get(v)?.length ?? 0) >= sessions, 60_000);
      for (const t of at.get(v)!) samples.push(t - start);
      at.delete(v);
    }
    samples.sort((a, b) => a - b);
    return {
      scenario: 'control-scale',
      routes,
      setRouteSmallMs,
      setRouteLargeMs,
      setRouteRatio: setRouteLargeMs / setRouteSmallMs,
      changeBytes: median(bytes),
      applyMs: percentile(applySorted, 50),
      applyP99Ms: percentile(applySorted, 99),
      importMs,
      sessions,
      processes,
      changes,
      convergenceP50Ms: percentile(samples, 50),
      convergenceP99Ms: percentile(samples, 99),
      convergenceMaxMs: samples.at(-1) ?? 0,
    };
  } finally {
    for (const c of children) c.kill('SIGTERM');
    admin.close();
    api.close();
    await Promise.all(real.map((a) => a.cleanup()));
    await proxy.stop();
    await ctl.cleanup();
  }
}
