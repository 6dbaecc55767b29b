import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { connect } from '@nats-io/transport-node';
import { bucketNames, kvManager } from '../../shared/nats.js';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { adminApi, agentsAt, deferrer, sampleAppliedVersions, isStatus } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { Sink } from '../helpers/sink.js';
import { natsTransport } from '../helpers/transport.js';

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(() => server.stop());

test('nats-server killed (SIGKILL) and restarted on its store mid-run: agents keep relaying, then re-sync; no version goes back', async (t) => {
  const defer = deferrer(t);
  const tr = natsTransport(server);
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const ctl = await tr.startController();
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', sink.target);
  await api.setRoute('example.net', sink.target);
  const agents = await Promise.all(['k1', 'k2', 'k3'].map((id) => tr.startAgent(ctl, id)));
  defer(() => Promise.all(agents.map((a) => a.cleanup())));
  await waitFor('3 agents at version 2', () => agentsAt(api, 2, 3));

  // Every agent's applied version, sampled throughout: it must never decrease.
  const { seen, stop: stopSampling } = sampleAppliedVersions(agents, defer);

  // The nats-server is the file's: a failure while it is down must not leave it down for the next tests.
  let restarted = false;
  defer(() => (restarted ? undefined : server.restart()));
  await server.kill('SIGKILL');
  await waitFor('agents notice NATS is gone', () => agents.every((a) => !a.agent.health().controllerConnected), 30_000);
  // Static stability: mail is accepted and delivered by the last applied table while NATS is down.
  for (const [i, a] of agents.entries()) {
    const client = smtpClient(a.port);
    await client.sendMail({ envelope: { from: 'a@sender.test', to: [`x${i}@example.com`] }, raw: testMessage(i, `x${i}@example.com`) });
    client.close();
  }
  await waitFor('delivered while NATS is down', () => sink.messages.length === 3);
  // The table cannot change meanwhile: refused at once, not buffered with an unknown outcome.
  await assert.rejects(api.setRoute('example.org', sink.target), isStatus(status.UNAVAILABLE, /NATS/));
  await waitFor('status shows the agents disconnected', async () => (await api.status()).agents.every((a) => a.state !== 'connected'), 30_000);

  await server.restart();
  restarted = true;
  await waitFor('3 agents back at version 2', () => agentsAt(api, 2, 3), 30_000);
  assert.equal(ctl.controller.store.version, 2, 'the table survived in the JetStream store');
  await api.setRoute('example.org', sink.target);
  await waitFor('converged on version 3', () => agentsAt(api, 3, 3));
  for (const a of agents) assert.equal(a.agent.router.table.get('example.org')?.target, sink.target);
  stopSampling();
  for (const [id, versions] of seen) {
    assert.deepEqual(versions, [...versions].sort((x, y) => x - y), `${id} went backwards: ${versions.join(' -> ')}`);
    assert.equal(versions.at(-1), 3);
  }
  const s = await api.status();
  assert.deepEqual(s.agents.map((a) => [a.id, a.state, a.appliedVersion]), [
    ['k1', 'connected', 3],
    ['k2', 'connected', 3],
    ['k3', 'connected', 3],
  ]);
  assert.deepEqual((await ctl.controller.store.audit()).map((r) => r.version), [3, 2, 1]);
});

test('an agent that starts while NATS is down relays with its persisted table and syncs when NATS comes up', async (t) => {
  const defer = deferrer(t);
  const tr = natsTransport(server);
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const ctl = await tr.startController();
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', sink.target);
  let a = await tr.startAgent(ctl, 'cold');
  await waitFor('cold at version 1', () => agentsAt(api, 1, 1));
  const dataDir = a.config.dataDir;
  await a.cleanup(true);

  let restarted = false;
  defer(() => (restarted ? undefined : server.restart()));
  await server.kill('SIGKILL');
  // A returning agent delivers once NATS has been unreachable for controller.startupGrace (its persisted table
  // may be stale: test/control/returning-agent.test.ts): a short grace here, and a generous wait for it.
  a = await tr.startAgent(ctl, 'cold', { dataDir, controller: { nats: { servers: [server.url], fleet: ctl.config.nats!.fleet }, healthInterval: '200ms', startupGrace: '1s' } });
  defer(() => a.cleanup());
  assert.equal(a.agent.appliedVersion, 1, 'started from the persisted table');
  const client = smtpClient(a.port);
  await client.sendMail({ envelope: { from: 'a@sender.test', to: ['y@example.com'] }, raw: testMessage(1, 'y@example.com') });
  client.close();
  await waitFor('delivered with NATS down since the agent started', () => sink.messages.length === 1, 30_000);

  await server.restart();
  restarted = true;
  await waitFor('cold connected at version 1', () => agentsAt(api, 1, 1), 30_000);
  await api.setRoute('example.net', sink.target);
  await waitFor('cold at version 2', () => a.agent.appliedVersion === 2);
});

test('the table purged from NATS (bucket restored from an old backup): versions continue above what agents applied', async (t) => {
  const defer = deferrer(t);
  const tr = natsTransport(server);
  let ctl = await tr.startController();
  const fleet = ctl.config.nats!.fleet;
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  for (const d of ['a.example', 'b.example', 'c.example']) await api.setRoute(d, 'smtp:[127.0.0.1]:2');
  const a = await tr.startAgent(ctl, 'p1');
  defer(() => a.cleanup());
  await waitFor('p1 at version 3', () => agentsAt(api, 3, 1));

  const nc = await connect({ servers: server.url });
  defer(() => nc.close());
  const routes = await kvManager(nc).open(bucketNames(fleet).routes);
  // Every key: the version key and one per route (shared/route-keys.ts).
  const purgeTable = async () => {
    const keys: string[] = [];
    for await (const k of await routes.keys()) keys.push(k);
    for (const k of keys) await routes.purge(k);
  };
  await purgeTable();
  await waitFor('controller saw the purge', () => ctl.controller.store.version === 0);
  assert.equal(a.agent.appliedVersion, 3, 'the agent keeps its table');
  assert.equal((await api.setRoute('d.example', 'smtp:[127.0.0.1]:2')).version, 4);
  await waitFor('p1 at version 4', () => a.agent.appliedVersion === 4);

  // Same, with a controller that never saw the old table: the agents' reports set the floor.
  await purgeTable();
  await ctl.cleanup();
  ctl = await tr.startController({ fleet });
  const api2 = adminApi(ctl.address);
  defer(() => api2.close());
  assert.equal(ctl.controller.store.version, 0);
  assert.equal((await api2.setRoute('e.example', 'smtp:[127.0.0.1]:2')).version, 5);
  await waitFor('p1 at version 5', () => a.agent.appliedVersion === 5);
  assert.deepEqual(a.agent.router.table.routes.map((r) => r.match), ['e.example']);
});
