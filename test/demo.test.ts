import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runCli } from './helpers/process.js';

test('mxswitch demo --duration 10s --json: zero loss, nothing at "old" after the hold', async () => {
  const r = await runCli(['demo', '--duration', '10s', '--json'], {}, 120_000);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as Record<string, number | boolean>;
  assert.equal(report.ok, true);
  assert.equal(report.lost, 0);
  assert.equal(report.deliveredToOldAfterHold, 0);
  // Mail reached old before the hold and new after the switchover, so "zero loss" is about real traffic. How
  // many messages a 10 s run moves is throughput (npm run bench), not a behaviour: no floor on it here.
  assert.ok((report.accepted as number) > 0, 'no traffic');
  assert.ok((report.deliveredOld as number) > 0 && (report.deliveredNew as number) > 0, 'both servers should have received mail');
  assert.equal((report.deliveredOld as number) + (report.deliveredNew as number) - (report.duplicated as number), report.accepted);
});

test('mxswitch demo rejects bad arguments with exit 2', async () => {
  const r = await runCli(['demo', '--agents', 'zero']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^mxswitch: --agents zero: expected an integer from 1 to 20\n$/);
});
