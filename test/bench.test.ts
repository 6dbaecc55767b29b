import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REPO } from './helpers/process.js';
import { runNode } from './helpers/wait.js';

interface Row {
  scenario: string;
  [key: string]: unknown;
}

// The benchmark's quick variant, so `npm run bench` cannot rot; no timing is asserted here. The child runs
// asynchronously (spawnSync would stall this process's event loop, and the test runner with it), with a bound
// that only catches a hang: on a loaded machine the quick run is slow, not wrong.
const BOUND_MS = 300_000;
test('npm run bench -- --quick --json runs every scenario; every message is accepted and relayed', { timeout: BOUND_MS + 30_000 }, async () => {
  const r = await runNode(['--import', 'tsx', 'test/bench/run.ts', '--quick', '--json'], REPO, BOUND_MS);
  assert.equal(r.code, 0, `exit ${r.code} (signal ${r.signal}): ${r.stderr.slice(-4000)}`);
  const results = JSON.parse(r.stdout) as Row[];
  const of = (scenario: string) => results.filter((x) => x.scenario === scenario);

  const ingest = of('ingest+relay') as unknown as { failed: number; accepted: number; shape: { sessions: number; messages: number } }[];
  assert.equal(ingest.length, 1);
  assert.equal(ingest[0]!.failed, 0);
  assert.equal(ingest[0]!.accepted, ingest[0]!.shape.sessions * ingest[0]!.shape.messages);

  const e2e = of('e2e') as unknown as { messages: number; received: number; seconds: number }[];
  assert.equal(e2e.length, 1);
  assert.equal(e2e[0]!.received, e2e[0]!.messages);
  assert.ok(e2e[0]!.seconds > 0);

  const drain = of('drain') as unknown as { queued: number; delivered: number }[];
  assert.equal(drain.length, 1);
  assert.ok(drain[0]!.queued > 0);
  assert.equal(drain[0]!.delivered, drain[0]!.queued);

  const scale = of('queue-scale') as unknown as { queued: number; claimP50ms: number; rssBytes: number }[];
  assert.equal(scale.length, 1);
  assert.ok(scale[0]!.queued > 0 && scale[0]!.claimP50ms > 0 && scale[0]!.rssBytes > 0);

  const lists = of('recipients') as unknown as { transport: string; addresses: number; appliedMs: number; editMs: number }[];
  assert.deepEqual(lists.map((l) => l.transport), ['grpc', 'nats']);
  for (const l of lists) assert.ok(l.addresses > 0 && l.appliedMs > 0 && l.editMs > 0);

  const big = of('large') as unknown as { accepted: boolean; relayed: boolean; peakRssBytes: number }[];
  assert.equal(big.length, 1);
  assert.ok(big[0]!.accepted && big[0]!.relayed && big[0]!.peakRssBytes > 0);

  const conv = of('convergence') as unknown as { agents: number; p99ms: number }[];
  assert.deepEqual(conv.map((c) => c.agents), [1, 3]);
  for (const c of conv) assert.ok(c.p99ms > 0);
});
