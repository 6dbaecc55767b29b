import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { adminApi, agentsAt, deferrer, last, sampleAppliedVersions, startController, startFleetAgent } from '../helpers/controller.js';
import { Sink } from '../helpers/sink.js';

test('controller restart: agents keep relaying while it is down, reconnect, converge; versions never go backwards', async (t) => {
  const defer = deferrer(t);
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const ctl = await startController();
  defer(() => ctl.cleanup());
  let api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', sink.target);
  await api.setRoute('example.net', sink.target);
  const agents = await Promise.all(['r1', 'r2', 'r3'].map((id) => startFleetAgent(ctl.address, id)));
  defer(() => Promise.all(agents.map((a) => a.cleanup())));
  await waitFor('3 agents at version 2', () => agentsAt(api, 2, 3));

  // Watch every agent's applied version throughout: it must never decrease.
  const { seen, stop: stopSampling } = sampleAppliedVersions(agents, defer);

  await ctl.controller.stop();
  await waitFor('agents notice', () => agents.every((a) => !a.agent.health().controllerConnected));
  // Static stability: with the controller down, mail is accepted and delivered by the last table.
  const client = smtpClient(agents[1]!.port);
  await client.sendMail({ envelope: { from: 'a@sender.test', to: ['x@example.com'] }, raw: testMessage(1, 'x@example.com') });
  client.close();
  await waitFor('delivered while the controller is down', () => sink.messages.length === 1);

  await ctl.restart();
  api.close();
  api = adminApi(ctl.address);
  await waitFor('3 agents reconnected at version 2', () => agentsAt(api, 2, 3));
  assert.equal(ctl.controller.store.version, 2, 'the version survived the restart');
  await api.setRoute('example.org', sink.target);
  await waitFor('converged on version 3', () => agentsAt(api, 3, 3));
  stopSampling();
  for (const [id, versions] of seen) {
    assert.deepEqual(versions, [...versions].sort((x, y) => x - y), `${id} went backwards: ${versions.join(' -> ')}`);
    assert.equal(versions.at(-1), 3);
  }
  const s = await api.status();
  assert.deepEqual(s.agents.map((a) => [a.id, a.state, a.appliedVersion]), [
    ['r1', 'connected', 3],
    ['r2', 'connected', 3],
    ['r3', 'connected', 3],
  ]);
});

test('a running hold survives a controller restart and completes only after the slow agent finished its in-flight delivery', async (t) => {
  const defer = deferrer(t);
  // A next hop that accepts TCP and never greets: the delivery stays in flight until the greeting timeout.
  const sockets: Socket[] = [];
  let closedAt = 0;
  const blackhole = createServer((s) => {
    sockets.push(s);
    s.on('close', () => (closedAt = Date.now()));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
  defer(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    blackhole.close(() => r());
  }));
  const port = (blackhole.address() as { port: number }).port;
  const ctl = await startController();
  defer(() => ctl.cleanup());
  let api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', `smtp:[127.0.0.1]:${port}`);
  const slow = await startFleetAgent(ctl.address, 'slow', { delivery: { pollInterval: '50ms', connectTimeout: '2s', greetingTimeout: '1500ms', socketTimeout: '5s' } });
  const quick = await startFleetAgent(ctl.address, 'quick');
  defer(() => Promise.all([slow.cleanup(), quick.cleanup()]));
  await waitFor('both at version 1', () => agentsAt(api, 1, 2));

  const client = smtpClient(slow.port);
  // The delivery cannot start before the message is sent, and the agent gives up on it no sooner than its
  // greeting timeout after connecting: so it ends no earlier than sentAt + 1500 ms (timers never fire early).
  const sentAt = Date.now();
  await client.sendMail({ envelope: { from: 'a@sender.test', to: ['x@example.com'] }, raw: testMessage(1, 'x@example.com') });
  client.close();
  await waitFor('delivery in flight to the blackhole', () => sockets.length === 1);

  const stream = api.hold('example.com', { timeoutMs: 10_000 }).catch((err: Error) => err);
  let opId = '';
  await waitFor('quick acked, slow pending', async () => {
    const op = (await api.status()).operations[0];
    opId = op?.id ?? '';
    return quick.agent.appliedVersion === 2 && op?.state === 'running';
  });
  assert.equal(closedAt, 0);
  await ctl.restart();
  assert.ok((await stream) instanceof Error, 'the first stream ended with the old controller');
  api.close();
  api = adminApi(ctl.address);
  const progress = await api.follow(opId);
  const end = last(progress);
  assert.equal(end.operation?.state, 'done', end.operation?.error);
  // The agent closes the connection when it gives up on the greeting.
  await waitFor('the in-flight delivery ended', () => closedAt > 0, 30_000);
  const earliestEnd = sentAt + 1500;
  assert.ok(end.operation!.finishedAtMs >= earliestEnd, `hold completed ${earliestEnd - end.operation!.finishedAtMs} ms before the in-flight delivery could have ended`);
  assert.deepEqual(end.acked, ['quick', 'slow']);
});
