import assert from 'node:assert/strict';
import { test } from 'node:test';
import { messageIds, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN } from '../helpers/controller.js';
import { runCli } from '../helpers/process.js';
import type { Transport } from '../helpers/transport.js';
import { lastRefusal, send, shadowFleet, shadowOf, type FleetAgent } from './helpers.js';

/**
 * Shadow behaviours that must hold whatever carries the control plane: the same bodies run over gRPC
 * (test/shadow/ingest.test.ts, return.test.ts) and over NATS (test/nats/shadow.test.ts). `transport` is a
 * function because a NATS transport needs its server, started in the file's `before`.
 */
export function shadowIngestScenarios(transport: () => Transport, suffix = ''): void {
  test('shadow accept: each 250 follows the peer\'s durable copy; peer down -> 250 with one copy, counted, copied once the peer is back; discards follow delivery' + suffix, async (t) => {
    const { sink, ctl, api, agents, start } = await shadowFleet(t, { ids: ['sh-a', 'sh-b'], transport: transport() });
    const [a, b] = agents as [FleetAgent, FleetAgent];
    for (let n = 1; n <= 5; n++) {
      assert.equal(await send(a.port, n), 250);
      // Read on the peer's own file right after the 250: the copy is already there.
      assert.equal(b.agent.queue.shadowViews.copyCount(), n, `copy of message ${n} at the peer before its 250`);
    }
    assert.equal(shadowOf(a).unshadowed, 0);
    // The operator's view of them: through the controller, and on the peer's file.
    const listed = await runCli(['queue', 'ls', '--shadow', '--agent', 'sh-b', '--json', '--controller', ctl.address], { MXSWITCH_TOKEN: ADMIN_TOKEN });
    assert.equal(listed.code, 0, listed.stderr);
    const copies = (JSON.parse(listed.stdout) as { results: { result: { copies: { origin: string; recipients: string[] }[] } }[] }).results[0]!.result.copies;
    assert.deepEqual(copies.map((c) => [c.origin, c.recipients]), Array.from({ length: 5 }, () => ['sh-a', ['u@example.com']]));
    const local = await runCli(['queue', 'ls', '--shadow', '--data-dir', b.config.dataDir]);
    assert.match(local.stdout, /-- 5 shadow copies/, local.stdout);

    // The peer goes away: mail is still accepted, with one copy, and counted.
    const bDir = b.config.dataDir;
    await b.cleanup(true);
    for (let n = 6; n <= 8; n++) assert.equal(await send(a.port, n), 250);
    assert.equal(shadowOf(a).unshadowed, 3, 'three messages without a copy');
    assert.equal(a.agent.health().total, 8);

    // It comes back (same disk, new port): the three are copied, the count falls to 0.
    agents[1] = await start('sh-b', bDir);
    const b2 = agents[1];
    await waitFor('re-shadowed after the peer returned', () => shadowOf(a).unshadowed === 0, 20_000);
    assert.equal(b2.agent.queue.shadowViews.copyCount(), 8);

    // Delivered mail leaves the peer too (discard notices).
    await api.setRoute('example.com', sink.target);
    await waitFor('all delivered', () => sink.messages.length === 8);
    await waitFor('copies discarded at the peer', () => b2.agent.queue.shadowViews.copyCount() === 0);
  });

  test('shadow tempfail: peer down -> 451 4.4.3 and nothing kept' + suffix, async (t) => {
    const { agents } = await shadowFleet(t, { ids: ['sh-a', 'sh-b'], onPeerDown: 'tempfail', transport: transport() });
    const [a, b] = agents as [FleetAgent, FleetAgent];
    assert.equal(await send(a.port, 1), 250);
    await b.cleanup(true);
    assert.equal(await send(a.port, 2), 451);
    assert.match(lastRefusal.text, /4\.4\.3/);
    assert.equal(a.agent.health().total, 1, 'the refused message is not queued');
    assert.equal(shadowOf(a).unshadowed, 0);
  });
}

/** An agent lost for good or for a while: its peer's takeover, by the controller or by `agent rm`. */
export function shadowLossScenarios(transport: () => Transport, suffix = ''): void {
  test('a lost agent returns with its old disk after the takeover: it drops what its peer delivered, delivers nothing twice, and rejoins the ring' + suffix, async (t) => {
    const ids = ['rt-a', 'rt-b', 'rt-c'];
    const { sink, api, agents, start } = await shadowFleet(t, { ids, takeoverAfter: '1s', transport: transport() });
    for (let n = 0; n < 9; n++) assert.equal(await send(agents[n % 3]!.port, n), 250);
    // Ring rt-a -> rt-b -> rt-c -> rt-a: each keeps its client's three copies.
    await waitFor('every message shadowed', () => agents.every((a) => a.agent.queue.shadowViews.copyCount() === 3));

    // rt-b goes away with its disk intact; rt-c (its holder) cannot reach it either: takeover.
    const bDir = agents[1]!.config.dataDir;
    await agents[1]!.cleanup(true);
    const c = agents[2]!;
    await waitFor("rt-b's mail in rt-c's queue", () => c.agent.health().total === 6, 15_000);
    // Taken-over copies of a held route stay held (routes are resolved at delivery, on the agent that delivers):
    // a flush of the route passes over them, and nothing reaches the next hop.
    const flushed = (await api.flush('example.com', { exclude: ['rt-b'] })).at(-1)!;
    assert.equal(flushed.operation?.state, 'done', flushed.operation?.error);
    await waitFor('the six held at rt-c', () => c.agent.health().routes.find((r) => r.match === 'example.com')?.held === 6, 15_000);
    assert.equal(sink.messages.length, 0, 'nothing of a held route delivered after the takeover');
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

  test('agent rm of a lost agent takes it over first: its peer delivers the mail it kept a copy of' + suffix, async (t) => {
    // takeoverAfter 1h: only the removal can make the takeover here.
    const { sink, api, agents } = await shadowFleet(t, { ids: ['rm-a', 'rm-b'], transport: transport() });
    const [a, b] = agents as [FleetAgent, FleetAgent];
    for (let n = 1; n <= 3; n++) assert.equal(await send(a.port, n), 250);
    assert.equal(b.agent.queue.shadowViews.copyCount(), 3);
    // Host loss: rm-a and its disk are gone; the operator forgets it.
    await a.cleanup();
    await waitFor('rm-a no longer connected', async () => (await api.status()).agents.find((x) => x.id === 'rm-a')?.state !== 'connected', 15_000);
    await api.removeAgent('rm-a');
    // The queue shows the adopted rows as soon as the writer thread committed them; the counter follows its reply.
    await waitFor("rm-a's mail in rm-b's queue", () => b.agent.health().total === 3 && b.agent.health().shadow!.counters.adopted === 3, 15_000);
    assert.equal(b.agent.queue.shadowViews.copyCount(), 0, 'moved from the shadow tables, not dropped');
    assert.equal(b.agent.health().shadow!.counters.adopted, 3);
    const after = await api.status();
    assert.deepEqual(after.agents.map((x) => x.id), ['rm-b'], 'rm-a is forgotten');
    assert.deepEqual(after.agents[0]!.shadow?.tookOver, ['rm-a']);
    await api.setRoute('example.com', sink.target);
    await waitFor('the three delivered by rm-b', () => sink.messages.length === 3, 15_000);
    assert.deepEqual(messageIds(sink.messages.map((m) => m.data)).sort(), ['msg-1@sender.test', 'msg-2@sender.test', 'msg-3@sender.test']);
  });
}
