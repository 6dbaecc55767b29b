/**
 * `npm run bench [-- --quick] [-- --json] [-- --scenario ingest|convergence]`: ingest and end-to-end relay
 * against a real agent process, and switchover convergence across 1/10/50 agents.
 * Timing targets live here, never in tests. --quick is the small variant CI runs so the suite can't rot.
 */
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { tempDir } from '../helpers/agent.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';
import { convergence, type ConvergenceResult } from './convergence.js';
import { benchBody, LoadSession, percentile } from './load.js';

const { values } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' }, scenario: { type: 'string' } } });
const wanted = (name: string) => !values.scenario || values.scenario === name;

interface Shape {
  sessions: number;
  messages: number;
  size: number;
}

interface Result {
  scenario: string;
  shape: Shape;
  generator: string;
  accepted: number;
  failed: number;
  seconds: number;
  msgsPerSec: number;
  p50ms: number;
  p99ms: number;
  endToEndSeconds: number;
}

const shapes: Shape[] = values.quick
  ? [{ sessions: 4, messages: 50, size: 4096 }]
  : [
      { sessions: 20, messages: 5000, size: 4096 },
      { sessions: 1, messages: 1000, size: 4096 },
      { sessions: 20, messages: 1000, size: 100 * 1024 },
    ];

async function ingest(shape: Shape): Promise<Result> {
  const sink = await new Sink().start();
  const dir = tempDir('mxs-bench-');
  const port = await freePort();
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'bench',
    dataDir: `${dir}/data`,
    smtp: { listen: `127.0.0.1:${port}`, hostname: 'mx.bench', maxConnections: 1000 },
    routes: [{ match: 'example.com', target: sink.target }],
    log: { level: 'warn' },
  });
  const agent = await new CliProcess(['agent', '--config', config], port).start();
  const latencies: number[] = [];
  let failed = 0;
  const total = shape.sessions * shape.messages;
  const deadline = Date.now() + (values.quick ? 60_000 : 300_000);
  const t0 = performance.now();
  try {
    await Promise.all(
      Array.from({ length: shape.sessions }, async (_, s) => {
        const session = await LoadSession.open(port);
        for (let i = 0; i < shape.messages && Date.now() < deadline; i++) {
          const r = await session.message('load@sender.test', 'user@example.com', benchBody(s * shape.messages + i, shape.size));
          if (r.reply.startsWith('250')) latencies.push(r.ms);
          else failed++;
        }
        session.close();
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    while (sink.messages.length < latencies.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const endToEndSeconds = (performance.now() - t0) / 1000;
    latencies.sort((a, b) => a - b);
    return {
      scenario: 'ingest+relay',
      shape,
      generator: 'built-in (pipelined envelope, one socket per session)',
      accepted: latencies.length,
      failed: failed + (total - latencies.length - failed),
      seconds,
      msgsPerSec: latencies.length / seconds,
      p50ms: percentile(latencies, 50),
      p99ms: percentile(latencies, 99),
      endToEndSeconds,
    };
  } finally {
    await agent.kill('SIGTERM');
    await sink.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const results: Result[] = [];
if (wanted('ingest')) for (const shape of shapes) results.push(await ingest(shape));
const converged: ConvergenceResult[] = [];
if (wanted('convergence')) for (const n of values.quick ? [1, 3] : [1, 10, 50]) converged.push(await convergence(n, values.quick ? 4 : 40));

if (values.json) {
  process.stdout.write(`${JSON.stringify([...results, ...converged], null, 2)}\n`);
} else {
  if (results.length) {
    console.log('scenario       sessions x messages x size   accepted  failed  msgs/s   p50 ms  p99 ms  end-to-end s');
    for (const r of results) {
      const shape = `${r.shape.sessions} x ${r.shape.messages} x ${Math.round(r.shape.size / 1024)}KB`;
      console.log(
        `${r.scenario.padEnd(14)} ${shape.padEnd(28)} ${String(r.accepted).padStart(8)}  ${String(r.failed).padStart(6)}  ${r.msgsPerSec.toFixed(0).padStart(6)}  ${r.p50ms.toFixed(1).padStart(6)}  ${r.p99ms.toFixed(1).padStart(6)}  ${r.endToEndSeconds.toFixed(1).padStart(12)}`,
      );
    }
    console.log(`generator: ${results[0]?.generator}; durable (fsync before every 250); agent in its own process\n`);
  }
  if (converged.length) {
    console.log('convergence (admin call -> last agent ack, one hold/release step)');
    console.log('agents  steps  p50 ms  p99 ms');
    for (const c of converged) console.log(`${String(c.agents).padStart(6)}  ${String(c.steps).padStart(5)}  ${c.p50ms.toFixed(1).padStart(6)}  ${c.p99ms.toFixed(1).padStart(6)}`);
  }
}
process.exit(results.every((r) => r.failed === 0) ? 0 : 1);
