import assert from 'node:assert/strict';
import { test } from 'node:test';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { AgentServiceClient, SessionRequest } from '../../proto/gen/mxswitch/v1/agent.js';
import { ADMIN_TOKEN, adminApi, AGENT_TOKEN, isStatus } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { grpcTransport } from '../helpers/transport.js';
import { startLoggedFleetAgent } from '../helpers/wait.js';
import { fleetScenarios } from './fleet-scenarios.js';

const OLD = 'smtp:[127.0.0.1]:2';



test('auth: wrong or missing agent token -> UNAUTHENTICATED; the controller keeps serving', async (t) => {
  const { ctl, api, defer } = await fleet(t, grpcTransport);
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
  // An in-process agent with a wrong token keeps retrying (and relaying); it never registers. Proven by the
  // refusals themselves: its control channel logs this only for UNAUTHENTICATED, and once it has seen the
  // second one, the controller has answered (and refused) two complete attempts.
  const bad = await startLoggedFleetAgent(ctl.address, 'bad-token-agent', {}, 'not-the-token');
  defer(() => bad.cleanup());
  await bad.log.waitFor('two UNAUTHENTICATED refusals', (r) => /the controller refused our token/.test(r.msg), 2);
  assert.deepEqual((await api.status()).agents.map((a) => a.id), [], 'nobody registered');
  assert.equal(bad.agent.health().controllerConnected, false);
});

test('auth: wrong or missing admin token -> UNAUTHENTICATED for unary and streaming calls', async (t) => {
  const { ctl, api, defer } = await fleet(t, grpcTransport);
  const wrong = adminApi(ctl.address, 'nope-nope-nope');
  const agentTok = adminApi(ctl.address, AGENT_TOKEN);
  defer(() => {
    wrong.close();
    agentTok.close();
  });
  await assert.rejects(wrong.status(), isStatus(status.UNAUTHENTICATED));
  await assert.rejects(agentTok.listRoutes(), isStatus(status.UNAUTHENTICATED), 'the agent token is not an admin token');
  await assert.rejects(wrong.setRoute('example.com', OLD), isStatus(status.UNAUTHENTICATED));
  await assert.rejects(
    new Promise((resolve, reject) => api.client.listRoutes({}, (err, res) => (err ? reject(err) : resolve(res)))),
    (e: ServiceError) => e.code === status.UNAUTHENTICATED,
    'no metadata at all',
  );
  await assert.rejects(wrong.hold('example.com'), isStatus(status.UNAUTHENTICATED));
  await assert.rejects(wrong.follow('op-x'), isStatus(status.UNAUTHENTICATED));
  assert.equal(ctl.controller.store.version, 0);
  assert.equal((await api.listRoutes()).version, 0, 'still serving');
});

fleetScenarios(() => grpcTransport);
