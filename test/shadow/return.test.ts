import assert from 'node:assert/strict';
import { test } from 'node:test';
import { messageIds, waitFor } from '../helpers/agent.js';
import { send, shadowFleet, shadowOf } from './helpers.js';

test('a lost agent returns with its old disk after the takeover: it drops what its peer delivered, delivers nothing twice, and rejoins the ring', async (t) => {
  const ids = ['rt-a', 'rt-b', 'rt-c'];
  const { sink, api, agents, start } = await shadowFleet(t, { ids, takeoverAfter: '1s' });
  for (let n = 0; n < 9; n++) assert.equal(await send(agents[n % 3]!.port, n), 250);
  // Ring rt-a -> rt-b -> rt-c -> rt-a: each keeps its client's three copies.
  await waitFor('every message shadowed', () => agents.every((a) => a.agent.queue.shadowViews.copyCount() === 3));

  // rt-b goes away with its disk intact; rt-c (its holder) cannot reach it either: takeover.
  const bDir = agents[1]!.config.dataDir;
  await agents[1]!.cleanup(true);
  const c = agents[2]!;
  await waitFor("rt-b's mail in rt-c's queue", () => c.agent.health().total === 6, 15_000);
  await api.setRoute('example.com', sink.target);
  await waitFor('all nine delivered (rt-b\'s by rt-c)', () => sink.messages.length === 9, 15_000);

  // Back with the old disk: it applies the table and the assignment before delivering, and drops the three.
  agents[1] = await start('rt-b', bDir);
  const b = agents[1];
  await waitFor('rt-b delivering again', () => b.agent.deliveryState.open, 15_000);
  assert.equal(b.agent.health().total, 0, 'what rt-c delivered left rt-b\'s queue before any delivery');
  assert.equal(b.agent.health().shadow!.counters.droppedTakenOver, 3);
  await waitFor('rt-b back in the ring', () => shadowOf(b).peer !== '' && agents.some((a) => a !== b && shadowOf(a).peer === 'rt-b'), 15_000);

  // It works as before: new mail is shadowed and delivered once.
  assert.equal(await send(b.port, 100), 250);
  await waitFor('the new message delivered', () => sink.messages.length === 10);
  await new Promise((r) => setTimeout(r, 1500));
  const arrived = messageIds(sink.messages.map((m) => m.data));
  t.diagnostic(`delivered ${arrived.length}, distinct ${new Set(arrived).size}`);
  assert.equal(new Set(arrived).size, arrived.length, 'no message delivered twice');
  assert.equal(arrived.length, 10);
});
