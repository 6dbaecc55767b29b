import assert from 'node:assert/strict';
import { test } from 'node:test';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import { ShadowServiceClient, type ReplicateResponse } from '../../proto/gen/mxswitch/v1/shadow.js';
import { waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN } from '../helpers/controller.js';
import { runCli } from '../helpers/process.js';
import { lastRefusal, send, shadowFleet, shadowOf, type FleetAgent } from './helpers.js';

test('shadow accept: each 250 follows the peer\'s durable copy; peer down -> 250 with one copy, counted, copied once the peer is back; discards follow delivery', async (t) => {
  const { sink, ctl, api, agents, start } = await shadowFleet(t, { ids: ['sh-a', 'sh-b'] });
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

test('shadow tempfail: peer down -> 451 4.4.3 and nothing kept', async (t) => {
  const { agents } = await shadowFleet(t, { ids: ['sh-a', 'sh-b'], onPeerDown: 'tempfail' });
  const [a, b] = agents as [FleetAgent, FleetAgent];
  assert.equal(await send(a.port, 1), 250);
  await b.cleanup(true);
  assert.equal(await send(a.port, 2), 451);
  assert.match(lastRefusal.text, /4\.4\.3/);
  assert.equal(a.agent.health().total, 1, 'the refused message is not queued');
  assert.equal(shadowOf(a).unshadowed, 0);
});

test('the shadow service refuses a client without the pair\'s credential', async (t) => {
  const { agents } = await shadowFleet(t, { ids: ['sh-a', 'sh-b'] });
  const b = agents[1]!;
  const client = new ShadowServiceClient(b.agent.shadowAddress, credentials.createInsecure());
  t.after(() => client.close());
  const attempt = (md: Metadata) =>
    new Promise<number>((resolve) => {
      const call = client.replicate(md);
      call.on('data', (_r: ReplicateResponse) => resolve(status.OK));
      call.on('error', (err: { code: number }) => resolve(err.code));
      call.write({ batchId: 1, copies: [{ id: 'X1', sender: '', recipients: ['u@example.com'], body: Buffer.from('x'), arrivedAtMs: Date.now(), dsn: false }], discards: [] });
    });
  assert.equal(await attempt(new Metadata()), status.UNAUTHENTICATED, 'anonymous');
  const forged = new Metadata();
  forged.set('authorization', 'Bearer 00');
  forged.set('x-mxswitch-agent', 'sh-a');
  assert.equal(await attempt(forged), status.UNAUTHENTICATED, 'a paired id with a wrong credential');
  assert.equal(b.agent.queue.shadowViews.copyCount(), 0);
});
