import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeliveryGate } from '../../agent/control/delivery-gate.js';
import { createLogger } from '../../shared/logger.js';

const log = createLogger('test', { level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


function gate(graceMs: number, appliedVersion = 3) {
  let opened = 0;
  const g = new DeliveryGate({ graceMs, appliedVersion, onOpen: () => opened++, log });
  return { g, opened: () => opened };
}

test('delivery gate: opens once the controller says its current version is one the agent has applied', () => {
  const { g, opened } = gate(60_000);
  g.start();
  g.reachable(true);
  g.controllerCurrent(5);
  assert.equal(g.status.open, false);
  assert.match(g.status.reason, /v5 \(have v3\)/);
  g.applied(4);
  assert.equal(opened(), 0);
  g.applied(5);
  assert.equal(opened(), 1);
  assert.match(g.status.reason, /current route table v5/);
  // Open for good: a later disconnect or a newer version changes nothing.
  g.reachable(false);
  g.controllerCurrent(9);
  assert.equal(g.status.open, true);
  assert.equal(opened(), 1);
  g.stop();
});

test('delivery gate: the agent is already current when the controller is at or below its persisted version', () => {
  const { g, opened } = gate(60_000, 7);
  g.start();
  g.reachable(true);
  g.controllerCurrent(7);
  assert.equal(opened(), 1);
  g.stop();
});

test('delivery gate: the grace counts only unreachable time; a reachable controller that is refused keeps it closed', async () => {
  const { g, opened } = gate(1500);
  g.start();
  const t0 = Date.now();
  await sleep(600);
  g.reachable(true);
  const spent = Date.now() - t0;
  g.controllerCurrent(5);
  g.refused(5, 'disk full');
  await sleep(2000);
  assert.equal(opened(), 0, 'opened while the controller was reachable');
  assert.match(g.status.reason, /v5 was refused \(disk full\)/);
  const unreachableAt = Date.now();
  g.reachable(false);
  while (opened() === 0 && Date.now() - unreachableAt < 10_000) await sleep(10);
  assert.equal(opened(), 1, 'not opened after the grace of unreachable time');
  const waited = Date.now() - unreachableAt;
  // The first stretch counted: the rest of the grace, not all of it, had to pass (generous bounds for a busy machine).
  assert.ok(waited >= 1500 - spent - 50, `opened after ${waited} ms, before the rest of the grace`);
  assert.ok(waited < 1500, `opened after ${waited} ms: the first ${spent} ms unreachable were not counted`);
  assert.match(g.status.reason, /unreachable for the start-up grace \(1500 ms\): delivering with route table v3/);
  g.stop();
});
