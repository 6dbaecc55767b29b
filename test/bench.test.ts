import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { REPO } from './helpers/process.js';

// The benchmark's quick variant, so `npm run bench` cannot rot; no timing is asserted here.
test('npm run bench -- --quick --json runs and every message is accepted and relayed', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/bench/run.ts', '--quick', '--json'], { cwd: REPO, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const results = JSON.parse(r.stdout) as { accepted: number; failed: number; shape: { sessions: number; messages: number } }[];
  assert.equal(results.length, 1);
  assert.equal(results[0]!.failed, 0);
  assert.equal(results[0]!.accepted, results[0]!.shape.sessions * results[0]!.shape.messages);
});
