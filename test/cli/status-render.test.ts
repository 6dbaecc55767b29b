import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fleetProblems, renderStatus, WatchPrinter } from '../../control/cli/commands/fleet-status.js';
import { StatusResponse, WatchResponse } from '../../proto/gen/mxswitch/v1/admin.js';

const reason = "waiting to apply the controller's route table v4 (have v3)";

function fleet(open: boolean): StatusResponse {
  return StatusResponse.fromPartial({
    version: 4,
    agents: [
      { id: 'a1', region: 'eu', state: 'connected', appliedVersion: 4, expected: true, health: { totalQueued: 5, delivery: { open: true, reason: 'applied', sinceMs: 1 } } },
      { id: 'a2', region: 'us', state: 'connected', appliedVersion: 4, expected: true, health: { totalQueued: 2, delivery: { open, reason, sinceMs: 1 } } },
    ],
  });
}

test('status: a connected agent that does not deliver yet is shown with its reason and keeps the fleet unconverged', () => {
  const s = fleet(false);
  assert.deepEqual(fleetProblems(s), [`a2 not delivering (${reason})`]);
  const text = renderStatus(s);
  const a2 = text.split('\n').find((l) => l.startsWith('a2'))!;
  assert.match(a2, /connected, not delivering/);
  assert.match(a2, /waiting to apply the controller's route table v4/);
  assert.doesNotMatch(text.split('\n').find((l) => l.startsWith('a1'))!, /not delivering/);
});

test('status: once delivering, the same fleet is converged', () => {
  assert.deepEqual(fleetProblems(fleet(true)), []);
  assert.doesNotMatch(renderStatus(fleet(true)), /not delivering/);
});

test('watch: an agent is printed when something changed or after 30 s, not on every health report; its counts are on the line', () => {
  const p = new WatchPrinter();
  const agent = (delivered: number, atMs: number) =>
    WatchResponse.fromPartial({ atMs, event: { $case: 'agent', value: { id: 'a1', state: 'connected', appliedVersion: 4, health: { totalQueued: 2, counters: { accepted: 9, delivered, deferred: 1, bounced: 0, rejected: 0 } } } } });
  const first = p.line(agent(7, 1000), 1000);
  assert.match(first!, / agent a1 connected v4 queue 2 \(held 0, deferred 0\) accepted 9 delivered 7 deferred 1 bounced 0$/);
  assert.equal(p.line(agent(7, 6000), 6000), undefined, 'the same report 5 s later');
  assert.match(p.line(agent(8, 11_000), 11_000)!, /delivered 8 /, 'a delivery is news');
  assert.equal(p.line(agent(8, 16_000), 16_000), undefined);
  assert.match(p.line(agent(8, 41_001), 41_001)!, /delivered 8 /, 'a heartbeat after 30 s');
  assert.match(p.line(WatchResponse.fromPartial({ atMs: 1, event: { $case: 'routesChanged', value: { version: 5 } } }))!, /routes now at version 5$/);
});
