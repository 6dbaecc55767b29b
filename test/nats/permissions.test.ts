import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect } from '@nats-io/transport-node';
import { agentInboxPrefix, bucketNames, commandSubject, encodeJson, kvManager } from '../../shared/nats.js';
import { routeKey, VERSION_KEY } from '../../shared/route-keys.js';
import { waitFor, within } from '../helpers/agent.js';
import { adminApi, agentsAt, deferrer, last, startController } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { REPO } from '../helpers/process.js';
import { startNatsAgent } from '../helpers/transport.js';
import { startLoggedNatsAgent } from '../helpers/wait.js';

// The documented account layout, verbatim: fleet "mxswitch", a controller user and one user per agent.
const ACCOUNTS = readFileSync(join(REPO, 'examples/nats/mxswitch-accounts.conf'), 'utf8');
const FLEET = 'mxswitch';
const CONTROLLER = { user: 'mxswitch-controller', password: 'change-me-controller-password' };
const agentUser = (id: string) => ({ user: id, password: `change-me-${id}-password` });

let server: NatsServer;
before(async () => {
  server = await NatsServer.start({ config: ACCOUNTS });
});
after(() => server.stop());

test('NATS accounts: agents read routes and recipient lists and write only their own state; an agent cannot write routes or another agent', async (t) => {
  const defer = deferrer(t);
  const ctl = await startController({ nats: { servers: [server.url], fleet: FLEET, ...CONTROLLER } }, { minStaleMs: 1000 });
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', 'smtp:[127.0.0.1]:2');
  const agents = await Promise.all(['mx-eu-1', 'mx-us-1'].map((id, i) => startNatsAgent(server, FLEET, id, { region: `r${i}`, shadow: { listen: '127.0.0.1:0' } }, agentUser(id))));
  defer(() => Promise.all(agents.map((a) => a.cleanup())));

  // What the layout allows is enough for the whole protocol: watch the table, ack, health, commands, operations.
  await waitFor('both agents at version 1', () => agentsAt(api, 1, 2));
  // Each agent could read the table's current version too, so it delivers (a refused read would keep it waiting).
  await waitFor('both agents delivering', async () => (await api.status()).agents.every((a) => a.health?.delivery?.open === true), 30_000);
  // Each may watch its own shadow assignment: they are paired.
  await waitFor('both agents paired', () => agents.every((a) => a.agent.health().shadow?.peer !== ''));
  // The recipient lists too: both agents may watch their bucket.
  await ctl.controller.recipients!.import('example.com', ['alice@example.com'], { replace: false, actor: 'test' });
  await waitFor('both agents at list version 1', async () => (await api.status()).agents.every((a) => a.recipientsVersion === 1));
  const list = await api.queueCommand({ kind: { $case: 'queueList', value: { match: '', state: '', limit: 5 } } });
  assert.deepEqual(list.results.map((r) => [r.agentId, r.ok]), [
    ['mx-eu-1', true],
    ['mx-us-1', true],
  ]);
  const hold = last(await api.hold('example.com'));
  assert.equal(hold.operation?.state, 'done', hold.operation?.error);
  await waitFor('health reported', async () => (await api.status()).agents.every((a) => a.health?.appliedVersion === 2));

  // mx-eu-1's own NATS user, used directly: everything beyond its rights is refused by the server.
  const names = bucketNames(FLEET);
  const nc = await connect({ servers: server.url, ...{ user: 'mx-eu-1', pass: agentUser('mx-eu-1').password }, inboxPrefix: agentInboxPrefix(FLEET, 'mx-eu-1') });
  defer(() => nc.close());
  const kvm = kvManager(nc);
  const routes = await kvm.open(names.routes);
  const agentsKv = await kvm.open(names.agents);
  const lists = await kvm.open(names.recipients);
  await assert.rejects(lists.put('version', encodeJson({ version: 9, state: 'done', domains: [] })), /Permissions Violation for Publish to "\$KV\.mxswitch-recipients\.version"/);
  const forged = encodeJson({ v: 99, route: { match: 'example.com', target: 'smtp:[192.0.2.66]:25' } });
  await assert.rejects(routes.put(routeKey('example.com'), forged), /Permissions Violation for Publish to "\$KV\.mxswitch-routes\.r\./);
  await assert.rejects(routes.update(VERSION_KEY, encodeJson({ version: 99, state: 'done', complete: 99 }), 1), /Permissions Violation for Publish to "\$KV\.mxswitch-routes\.version"/);
  await assert.rejects(routes.delete(VERSION_KEY), /Permissions Violation/);
  await assert.rejects(agentsKv.put('mx-us-1', encodeJson({ agentId: 'mx-us-1', appliedVersion: 99 })), /Permissions Violation for Publish to "\$KV\.mxswitch-agents\.mx-us-1"/);
  // mx-us-1's shadow assignment (the credentials of its pairs) is not for mx-eu-1: no watch, no read.
  const shadowKv = await kvm.open(names.shadow);
  await assert.rejects(async () => {
    const w = await shadowKv.watch({ key: 'mx-us-1' });
    for await (const _ of w) break;
  }, /Permissions Violation|timeout/i);
  await assert.rejects(shadowKv.get('mx-us-1'), /Permissions Violation|timeout/i);
  // Sending mx-us-1 a command: the server's refusal of the publish, which the client matches to the request.
  // Not a timeout or "no responders" (those would also follow from nobody listening): the timeout is generous.
  await assert.rejects(nc.request(commandSubject(FLEET, 'mx-us-1'), new Uint8Array(), { timeout: 30_000 }), (e: Error) => e.message === 'Permissions Violation for Publish to "mxswitch.cmd.mx-us-1"');
  // Receiving mx-us-1's commands: the subscription is refused (it ends with the server's violation).
  const snoop = nc.subscribe(commandSubject(FLEET, 'mx-us-1'));
  assert.match(String(await within('the subscription to end', snoop.closed, 30_000)), /Permissions Violation for Subscription to "mxswitch\.cmd\.mx-us-1"/);
  // Its own key it may write (that is how it acks).
  assert.ok((await agentsKv.put('mx-eu-1', encodeJson({ agentId: 'mx-eu-1', probe: true }))) > 0);

  // Nothing changed: the table, the agents' tables and what status says about mx-us-1.
  assert.deepEqual((await api.listRoutes()).version, 2);
  assert.equal(ctl.controller.store.version, 2);
  for (const a of agents) assert.equal(a.agent.router.table.get('example.com')?.target, 'smtp:[127.0.0.1]:2');
  const us = (await api.status()).agents.find((a) => a.id === 'mx-us-1')!;
  assert.equal(us.appliedVersion, 2);
});

test('NATS accounts: an agent with a wrong password never registers and keeps relaying with its table', async (t) => {
  const defer = deferrer(t);
  const ctl = await startController({ nats: { servers: [server.url], fleet: FLEET, ...CONTROLLER } }, { minStaleMs: 1000 });
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  const intruder = await startLoggedNatsAgent(server, FLEET, 'mx-eu-1', { routes: [{ match: 'example.org', target: 'smtp:[127.0.0.1]:2' }] }, { user: 'mx-eu-1', password: 'wrong' });
  defer(() => intruder.cleanup());
  // Refused by the server, twice (it retries), as its control channel reports: not merely not connected yet.
  await intruder.log.waitFor('two NATS authorization violations', (r) => /cannot connect to NATS/.test(r.msg) && r.error === 'Authorization Violation', 2);
  assert.equal(intruder.agent.health().controllerConnected, false);
  assert.equal(intruder.agent.router.table.get('example.org')?.target, 'smtp:[127.0.0.1]:2', 'bootstrap table in force');
  assert.deepEqual((await api.status()).agents.filter((a) => a.state === 'connected'), []);
});
