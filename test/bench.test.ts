import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { REPO } from './helpers/process.js';

// The benchmark's quick variant, so `npm run bench` cannot rot; no timing is asserted here.
test('npm run bench -- --quick --json runs and every message is accepted and relayed', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/bench/run.ts', '--quick', '--json'], { cwd: REPO, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const results = JSON.parse(r.stdout) as { scenario: string; accepted: number; failed: number; shape: { sessions: number; messages: number }; agents: number; p99ms: number }[];
  const ingest = results.filter((x) => x.scenario === 'ingest+relay');
  assert.equal(ingest.length, 1);
  assert.equal(ingest[0]!.failed, 0);
  assert.equal(ingest[0]!.accepted, ingest[0]!.shape.sessions * ingest[0]!.shape.messages);
  const conv = results.filter((x) => x.scenario === 'convergence');
  assert.deepEqual(conv.map((c) => c.agents), [1, 3]);
  for (const c of conv) assert.ok(c.p99ms > 0);
});
