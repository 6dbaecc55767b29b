import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import type { ControlHandler } from '../../agent/agent.js';
import { DeliveryGate } from '../../agent/control/delivery-gate.js';
import { createLogger } from '../../shared/logger.js';
import { smtpClient, startAgent, tempDir, testMessage, waitFor } from '../helpers/agent.js';
import { deferrer } from '../helpers/controller.js';
import { Sink } from '../helpers/sink.js';

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
  const { g, opened } = gate(3000);
  g.start();
  const t0 = Date.now();
  // Half the grace unreachable: 1.5 s of slack on either side for a busy machine's timers.
  await sleep(1500);
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
  assert.ok(waited >= 3000 - spent - 50, `opened after ${waited} ms, before the rest of the grace`);
  // Without the first stretch counted it would be 3000 ms.
  assert.ok(waited < 3000, `opened after ${waited} ms: the first ${spent} ms unreachable were not counted`);
  assert.match(g.status.reason, /unreachable for the start-up grace \(3000 ms\): delivering with route table v3/);
  g.stop();
});

test('delivery gate: a flush or retry that arrives before the controller\'s table only makes mail due; nothing goes to the stale next hop', async (t) => {
  const defer = deferrer(t);
  const stale = await new Sink().start();
  const fresh = await new Sink().start();
  defer(() => stale.stop());
  defer(() => fresh.stop());
  const dataDir = tempDir('mxs-gate-');
  defer(() => rmSync(dataDir, { recursive: true, force: true }));
  // The returning agent's situation: mail deferred by its old next hop (retried only in an hour), then a restart.
  const retry = { intervals: ['1h'], maxAge: '1d', jitter: 0 };
  stale.dataReply = () => ({ code: 421, message: 'try later' });
  const before = await startAgent({ dataDir, retry, routes: [{ match: 'example.com', target: stale.target }] });
  const client = smtpClient(before.port);
  for (const [n, to] of [[1, 'a@example.com'], [2, 'b@example.com']] as const) await client.sendMail({ envelope: { from: 's@sender.test', to: [to] }, raw: testMessage(n, to) });
  client.close();
  await waitFor('both deferred by the old next hop', () => before.agent.queue.stats().byState.deferred === 2);
  await before.cleanup(true);
  stale.dataReply = undefined;
  const staleConnections = stale.connections;

  // Back with a controller configured: the channel is connected but has not sent a table yet.
  let handler: ControlHandler | undefined;
  const a = await startAgent(
    { dataDir, retry, routes: [{ match: 'example.com', target: stale.target }], controller: { grpc: { address: '127.0.0.1:9', token: 'agent-token-0123456789' }, startupGrace: '10m' } },
    (h) => ({
      start: () => {
        handler = h;
        h.setConnected(true);
      },
      stop: async () => undefined,
    }),
  );
  defer(() => a.cleanup());
  assert.ok(handler, 'the control channel was started');
  const flushed = (await handler.runCommand(0, { kind: 'flush', match: 'a@example.com' })) as { due: number };
  assert.equal(flushed.due, 1, 'the flush made a deferred recipient due');
  const retried = (await handler.runCommand(0, { kind: 'queueRetry', select: { match: 'b@example.com' }, dryRun: false })) as { recipients: number };
  assert.equal(retried.recipients, 1, 'the retry made the other one due');
  // Twenty poll intervals (50 ms) in which a running scheduler would have sent the due recipient: a busy machine
  // can only make this pass more easily, never fail it.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(a.agent.deliveryState.open, false, a.agent.deliveryState.reason);
  assert.equal(stale.connections - staleConnections, 0, 'a connection to the next hop of the stale table');
  assert.equal(a.agent.queue.stats().total, 2, 'both wait in the queue');

  // The controller's table re-points example.com; once it is applied and current, delivery starts with it.
  assert.equal(await handler.applyTable(1, [{ match: 'example.com', target: fresh.target }]), undefined);
  handler.controllerCurrent(1);
  await waitFor('both delivered to the fresh next hop', () => fresh.messages.length === 2, 30_000);
  assert.equal(stale.connections - staleConnections, 0, 'a connection to the next hop of the stale table');
  assert.match(a.agent.deliveryState.reason, /current route table v1/);
});
