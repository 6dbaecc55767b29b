import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fleetProblems, renderStatus } from '../../control/cli/commands/fleet-status.js';
import { StatusResponse } from '../../proto/gen/mxswitch/v1/admin.js';

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
