import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { AgentServiceClient, SessionRequest } from '../../proto/gen/mxswitch/v1/agent.js';
import { waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, adminApi, AGENT_TOKEN, agentsAt, deferrer, last, startController, startFleetAgent } from '../helpers/controller.js';

const OLD = 'smtp:[127.0.0.1]:2';

async function setup(t: TestContext, extra: Record<string, unknown> = {}) {
  const defer = deferrer(t);
  const ctl = await startController(extra);
  const api = adminApi(ctl.address);
  defer(async () => {
    api.close();
    await ctl.cleanup();
  });
  return { ctl, api, defer };
}

const isCode = (code: status, details?: RegExp) => (e: ServiceError) => e.code === code && (!details || details.test(e.details));

test('auth: wrong or missing agent token -> UNAUTHENTICATED; the controller keeps serving', async (t) => {
  const { ctl, api, defer } = await setup(t);
  const tryToken = (token: string | undefined) =>
    new Promise<ServiceError>((resolve) => {
      const client = new AgentServiceClient(ctl.address, credentials.createInsecure());
      const md = new Metadata();
      if (token !== undefined) md.set('authorization', `Bearer ${token}`);
      const s = client.session(md);
      s.on('data', () => undefined);
      s.on('error', (err: ServiceError) => {
        client.close();
        resolve(err);
      });
      s.write(SessionRequest.fromPartial({ body: { $case: 'hello', value: { agentId: 'intruder' } } }));
    });
  assert.equal((await tryToken('wrong-token')).code, status.UNAUTHENTICATED);
  assert.equal((await tryToken(undefined)).code, status.UNAUTHENTICATED);
  assert.equal((await tryToken(ADMIN_TOKEN)).code, status.UNAUTHENTICATED, 'the admin token is not an agent token');
  // An in-process agent with a wrong token keeps retrying (and relaying); it never registers.
  const bad = await startFleetAgent(ctl.address, 'bad-token-agent', {}, 'not-the-token');
  defer(() => bad.cleanup());
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual((await api.status()).agents.map((a) => a.id), [], 'nobody registered');
});

test('auth: wrong or missing admin token -> UNAUTHENTICATED for unary and streaming calls', async (t) => {
  const { ctl, api, defer } = await setup(t);
  const wrong = adminApi(ctl.address, 'nope-nope-nope');
  const agentTok = adminApi(ctl.address, AGENT_TOKEN);
  defer(() => {
    wrong.close();
    agentTok.close();
  });
  await assert.rejects(wrong.status(), isCode(status.UNAUTHENTICATED));
  await assert.rejects(agentTok.listRoutes(), isCode(status.UNAUTHENTICATED), 'the agent token is not an admin token');
  await assert.rejects(wrong.setRoute('example.com', OLD), isCode(status.UNAUTHENTICATED));
  await assert.rejects(
    new Promise((resolve, reject) => api.client.listRoutes({}, (err, res) => (err ? reject(err) : resolve(res)))),
    isCode(status.UNAUTHENTICATED),
    'no metadata at all',
  );
  await assert.rejects(wrong.hold('example.com'), isCode(status.UNAUTHENTICATED));
  await assert.rejects(wrong.follow('op-x'), isCode(status.UNAUTHENTICATED));
  assert.equal(ctl.controller.store.version, 0);
  assert.equal((await api.listRoutes()).version, 0, 'still serving');
});

test('agents receive the table, ack it, and status shows their versions; route changes propagate', async (t) => {
  const { ctl, api, defer } = await setup(t);
  const agents = await Promise.all(['a1', 'a2', 'a3'].map((id) => startFleetAgent(ctl.address, id)));
  defer(() => Promise.all(agents.map((a) => a.cleanup())));
  await waitFor('3 agents connected', () => agentsAt(api, 0, 3));

  assert.equal((await api.setRoute('example.com', OLD)).version, 1);
  await waitFor('all at version 1', () => agentsAt(api, 1, 3));
  for (const a of agents) {
    assert.equal(a.agent.appliedVersion, 1);
    assert.equal(a.agent.router.table.get('example.com')?.target, OLD);
  }
  // CAS through the API: a stale expected_version is ABORTED and names the versions.
  await assert.rejects(api.setRoute('example.com', OLD, { hold: true, expectedVersion: 7 }), isCode(status.ABORTED, /version 1, not 7/));
  await assert.rejects(api.setRoute('example.com', 'bogus'), isCode(status.INVALID_ARGUMENT, /bogus/));
  await assert.rejects(api.removeRoute('example.org'), isCode(status.NOT_FOUND));
  await api.setRoute('example.net', OLD, { expectedVersion: 1, tls: 'required' });
  await api.removeRoute('example.com');
  await waitFor('all at version 3', () => agentsAt(api, 3, 3));
  for (const a of agents) {
    assert.equal(a.agent.router.table.get('example.com'), undefined);
    assert.equal(a.agent.router.table.get('example.net')?.tls, 'required');
  }
  const s = await api.status();
  assert.equal(s.version, 3);
  assert.deepEqual(
    s.agents.map((a) => [a.id, a.state, a.appliedVersion, a.expected, a.region]),
    [
      ['a1', 'connected', 3, true, 'test'],
      ['a2', 'connected', 3, true, 'test'],
      ['a3', 'connected', 3, true, 'test'],
    ],
  );
  await waitFor('health reported', async () => (await api.status()).agents.every((a) => a.health?.appliedVersion === 3));
  assert.deepEqual(await api.listRoutes(), { version: 3, routes: [{ match: 'example.net', target: OLD, hold: false, tls: 'required' }] });
  // A stopped agent shows as disconnected, still expected.
  await agents[2]!.cleanup();
  await waitFor('a3 disconnected', async () => (await api.status()).agents.find((a) => a.id === 'a3')?.state === 'disconnected');
  // RemoveAgent: refused while connected, works when it is gone.
  await assert.rejects(api.removeAgent('a1'), isCode(status.FAILED_PRECONDITION, /connected/));
  await api.removeAgent('a3');
  assert.deepEqual((await api.status()).agents.map((a) => a.id), ['a1', 'a2']);
});

test('nack: an agent that cannot persist the table reports the error; hold fails naming it', async (t) => {
  const { ctl, api, defer } = await setup(t);
  await api.setRoute('example.com', OLD);
  const good = await startFleetAgent(ctl.address, 'good');
  const broken = await startFleetAgent(ctl.address, 'broken');
  defer(() => Promise.all([good.cleanup(), broken.cleanup()]));
  await waitFor('both at version 1', () => agentsAt(api, 1, 2));
  // routes.json.tmp as a directory: the agent's temp-file write fails (EISDIR), even as root.
  mkdirSync(join(broken.config.dataDir, 'routes.json.tmp'));
  const end = last(await api.hold('example.com', { timeoutMs: 5000 }));
  assert.equal(end.operation?.state, 'failed');
  assert.match(end.operation!.error, /broken: .*EISDIR/);
  assert.match(end.operation!.error, /example\.com is held/);
  assert.deepEqual(end.failed.map((f) => f.split(':')[0]), ['broken']);
  const b = (await api.status()).agents.find((a) => a.id === 'broken')!;
  assert.equal(b.appliedVersion, 1, 'the old table stays in force');
  assert.match(b.lastError, /version 2 refused: .*EISDIR/);
  assert.equal(broken.agent.router.table.get('example.com')?.hold, undefined);
  assert.equal(good.agent.router.table.get('example.com')?.hold, true);
  assert.equal((await api.getOperation(end.operation!.id)).operation?.state, 'failed');
  // Follow on a finished operation replays its final state and ends.
  const replay = await api.follow(end.operation!.id);
  assert.equal(replay.length, 1);
  assert.equal(replay[0]!.operation?.state, 'failed');
  await assert.rejects(api.follow('op-nope'), isCode(status.NOT_FOUND));
});

test('commands: results correlated per agent; min_version refused by an agent that has not applied it', async (t) => {
  const { ctl, api, defer } = await setup(t);
  await api.setRoute('example.com', OLD);
  const a = await startFleetAgent(ctl.address, 'c1');
  const b = await startFleetAgent(ctl.address, 'c2');
  defer(() => Promise.all([a.cleanup(), b.cleanup()]));
  await waitFor('both at version 1', () => agentsAt(api, 1, 2));
  const list = await api.queueCommand({ kind: { $case: 'queueList', value: { match: '', state: '', limit: 10 } } });
  assert.deepEqual(
    list.results.map((r) => [r.agentId, r.ok, r.json]),
    [
      ['c1', true, '[]'],
      ['c2', true, '[]'],
    ],
  );
  const show = await api.queueCommand({ agentId: 'c1', kind: { $case: 'queueShow', value: { id: 'nope' } } });
  assert.equal(show.results.length, 1);
  assert.equal(show.results[0]!.ok, false);
  assert.match(show.results[0]!.error, /NOT_FOUND: no message nope/);
  await assert.rejects(api.queueCommand({ agentId: 'ghost', kind: { $case: 'queueList', value: { match: '', state: '', limit: 0 } } }), isCode(status.NOT_FOUND));

  // Directly through the session: a flush needing a version the agent does not have is refused (STALE_VERSION).
  const stale = await ctl.controller.sessions.command('c1', { $case: 'flush', value: { match: 'example.com' } }, 99, 5000);
  assert.equal(stale.ok, false);
  assert.match(stale.error, /STALE_VERSION: command needs route table version 99, this agent has 1/);
  assert.deepEqual(await ctl.controller.sessions.command('c1', { $case: 'flush', value: { match: 'example.com' } }, 1, 5000), { ok: true, error: '', json: '{"due":0}' });
  // A flush operation requires the controller's current version: an agent behind it refuses, and the op fails.
  mkdirSync(join(b.config.dataDir, 'routes.json.tmp'));
  await api.setRoute('example.net', OLD);
  await waitFor('c1 at version 2', () => a.agent.appliedVersion === 2);
  const end = last(await api.flush('', { timeoutMs: 3000 }));
  assert.equal(end.operation?.state, 'failed');
  assert.deepEqual(end.failed.map((f) => f.split(':')[0]), ['c2']);
  assert.match(end.failed[0]!, /STALE_VERSION/);
  // QueueCommand flush: also version-gated, reported per agent, not thrown.
  const qf = await api.queueCommand({ kind: { $case: 'flush', value: { match: '' } } });
  assert.deepEqual(qf.results.map((r) => [r.agentId, r.ok]), [
    ['c1', true],
    ['c2', false],
  ]);
});

test('an agent silent for lostAfter is shown as lost', async (t) => {
  const { ctl, api, defer } = await setup(t, { lostAfter: '300ms' });
  const a = await startFleetAgent(ctl.address, 'l1');
  defer(() => a.cleanup());
  await waitFor('l1 connected', () => agentsAt(api, 0, 1));
  await a.cleanup();
  await waitFor('l1 disconnected or lost', async () => (await api.status()).agents[0]!.state !== 'connected');
  await waitFor('l1 lost', async () => (await api.status()).agents[0]!.state === 'lost', 3000);
});
