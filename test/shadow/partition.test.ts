import assert from 'node:assert/strict';
import { test } from 'node:test';
import { messageIds, waitFor } from '../helpers/agent.js';
import { freePort } from '../helpers/process.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { send, shadowFleet, shadowOf } from './helpers.js';

test('partition between two peers only (the controller sees both): no takeover, mail accepted with one copy, re-shadowed after the heal, no duplicate', async (t) => {
  const ids = ['pt-a', 'pt-b'];
  const ports = new Map(await Promise.all(ids.map(async (id) => [id, await freePort()] as const)));
  // Each agent's peer reaches it only through a proxy that can cut the link between the two.
  const proxies = new Map(await Promise.all(ids.map(async (id) => [id, await new TcpProxy(ports.get(id)!).start()] as const)));
  t.after(() => Promise.all([...proxies.values()].map((p) => p.stop())));
  const { sink, ctl, api, agents } = await shadowFleet(t, { ids, takeoverAfter: '1s', listenPort: (id) => ports.get(id)!, advertise: (id) => proxies.get(id)!.address });
  const [a, b] = agents as [(typeof agents)[0], (typeof agents)[0]];
  assert.equal(await send(a.port, 1), 250);
  assert.equal(await send(b.port, 2), 250);

  for (const p of proxies.values()) p.partition();
  for (let n = 3; n <= 6; n++) assert.equal(await send((n % 2 ? a : b).port, n), 250);
  // Both cannot reach each other, and say so; both stay connected to the controller, so nothing is taken over.
  await waitFor('each reports its client unreachable', () => ctl.controller.shadow!.view('pt-a')!.appliedVersion > 0 && shadowOf(a).unreachableClients.includes('pt-b') && shadowOf(b).unreachableClients.includes('pt-a'), 15_000);
  await new Promise((r) => setTimeout(r, 2500));
  assert.deepEqual(ctl.controller.shadow!.takeovers(), [], 'no takeover while the controller sees both');
  assert.equal(shadowOf(a).unshadowed + shadowOf(b).unshadowed, 4, 'the four messages of the partition have one copy');
  assert.equal(a.agent.health().total + b.agent.health().total, 6);

  for (const p of proxies.values()) p.heal();
  await waitFor('re-shadowed after the heal', () => shadowOf(a).unshadowed === 0 && shadowOf(b).unshadowed === 0, 20_000);
  await api.setRoute('example.com', sink.target);
  await waitFor('six delivered', () => sink.messages.length === 6, 15_000);
  await new Promise((r) => setTimeout(r, 1000));
  const arrived = messageIds(sink.messages.map((m) => m.data));
  assert.equal(new Set(arrived).size, 6);
  assert.equal(arrived.length, 6, 'no duplicate');
  await waitFor('copies discarded after delivery', () => agents.every((x) => x.agent.queue.shadowViews.copyCount() === 0));
});
