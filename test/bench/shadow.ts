import { rmSync } from 'node:fs';
import { Controller } from '../../control/controller.js';
import { controllerConfigSchema, parseConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { tempDir } from '../helpers/agent.js';
import { freePort } from '../helpers/process.js';
import { percentile } from './load.js';
import { startMxswitch, type PeerInstance } from './peers.js';
import { load, type Shape } from './scenarios.js';

export interface ShadowCostRow {
  mode: 'off' | 'on';
  shape: Shape;
  accepted: number;
  failed: number;
  msgsPerSec: number;
  /** Every repetition's msgs/s, in run order. */
  repsMsgsPerSec: number[];
  p50ms: number;
  p99ms: number;
}

export interface ShadowCostResult {
  scenario: 'shadow';
  rows: ShadowCostRow[];
  /** msgs/s with shadow on / off (medians). */
  ratio: number;
}

const TOKEN = 'bench-agent-token-0123';
const HELD = { match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true };

/**
 * Ingest with shadow redundancy on against off: the same agent process shape, the route held (so the run
 * measures the 250 path only: local commit, and with shadow the peer's durable copy too). On: a controller
 * (in this process; idle during the load) pairs the agent under test with a second agent process. Runs
 * interleaved, off/on `reps` times; medians.
 */
export async function shadowCost(shape: Shape, reps: number, budgetMs: number): Promise<ShadowCostResult> {
  const dir = tempDir('mxs-bench-shadow-');
  const log = createLogger('bench-controller', { level: 'warn' });
  const controller = new Controller(parseConfig(controllerConfigSchema, { dataDir: `${dir}/controller`, grpc: { listen: '127.0.0.1:0' }, tokens: { agent: TOKEN, admin: `${TOKEN}-admin` }, log: { level: 'warn' } }), log);
  const peers: PeerInstance[] = [];
  try {
    await controller.start();
    await controller.store.set(HELD);
    const shadowAgent = async (id: string, region: string) =>
      startMxswitch({
        nextHop: 9,
        agent: { id, region, controller: { grpc: { address: controller.address, token: TOKEN } }, shadow: { listen: `127.0.0.1:${await freePort()}` }, routes: [HELD] },
      });
    const off = await startMxswitch({ nextHop: 9, agent: { routes: [HELD] } });
    peers.push(off);
    const on = await shadowAgent('bench', 'r1');
    peers.push(on, await shadowAgent('bench-peer', 'r2'));
    const deadline = Date.now() + 60_000;
    while (!(controller.shadow?.view('bench')?.peer === 'bench-peer' && (controller.shadow.view('bench')?.appliedVersion ?? 0) > 0)) {
      if (Date.now() > deadline) throw new Error('the shadow pair did not form within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const runs: Record<'off' | 'on', { rate: number; latencies: number[]; failed: number }[]> = { off: [], on: [] };
    let idBase = 0;
    for (let rep = 0; rep < reps; rep++) {
      for (const [mode, peer] of [['off', off], ['on', on]] as const) {
        const r = await load(peer.port, shape, Date.now() + budgetMs, idBase);
        idBase += shape.sessions * shape.messages;
        runs[mode].push({ rate: r.latencies.length / r.seconds, latencies: r.latencies, failed: r.failed });
      }
    }
    const row = (mode: 'off' | 'on'): ShadowCostRow => {
      const sorted = [...runs[mode]].sort((a, b) => a.rate - b.rate);
      const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
      const lat = [...median.latencies].sort((a, b) => a - b);
      return { mode, shape, accepted: median.latencies.length, failed: runs[mode].reduce((n, r) => n + r.failed, 0), msgsPerSec: median.rate, repsMsgsPerSec: runs[mode].map((r) => r.rate), p50ms: percentile(lat, 50), p99ms: percentile(lat, 99) };
    };
    const rows = [row('off'), row('on')];
    return { scenario: 'shadow', rows, ratio: rows[1]!.msgsPerSec / rows[0]!.msgsPerSec };
  } finally {
    await Promise.all(peers.map((p) => p.stop()));
    await controller.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
