import assert from 'node:assert/strict';
import { test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { breakRoutePersistence, waitFor } from '../helpers/agent.js';
import { agentsAt, isStatus, last } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import type { Transport } from '../helpers/transport.js';

const OLD = 'smtp:[127.0.0.1]:2';


/**
 * Fleet behaviours every transport must show (registered by test/control/fleet.test.ts over gRPC and
 * test/nats/fleet.test.ts over NATS): table push and acks, nacks, commands with min_version, lost agents.
 */
export function fleetScenarios(tr: () => Transport, label = ''): void {
  test(`an agent's status says it delivers as soon as its delivery gate opens, not at its next health report${label}`, async (t) => {
    const { ctl, api, defer } = await fleet(t, tr(), { routes: () => ({ 'example.com': OLD }) });
    // A health interval far beyond the test: only the reports sent on a change can say the gate opened.
    const a = await tr().startAgent(ctl, 'gate-1', { controller: { ...tr().agentController(ctl), healthInterval: '1h' } });
    defer(() => a.cleanup());
    await waitFor('the agent delivers', () => a.agent.health().delivery.open);
    await waitFor('the controller sees it delivering', async () => (await api.status()).agents[0]?.health?.delivery?.open === true);
  });

  test(`agents receive the table, ack it, and status shows their versions; route changes propagate${label}`, async (t) => {
    const { ctl, api, defer } = await fleet(t, tr());
    const agents = await Promise.all(['a1', 'a2', 'a3'].map((id) => tr().startAgent(ctl, id)));
    defer(() => Promise.all(agents.map((a) => a.cleanup())));
    await waitFor('3 agents connected', () => agentsAt(api, 0, 3));

    assert.equal((await api.setRoute('example.com', OLD)).version, 1);
    await waitFor('all at version 1', () => agentsAt(api, 1, 3));
    for (const a of agents) {
      assert.equal(a.agent.appliedVersion, 1);
      assert.equal(a.agent.router.table.get('example.com')?.target, OLD);
    }
    // CAS through the API: a stale expected_version is ABORTED and names the versions.
    await assert.rejects(api.setRoute('example.com', OLD, { hold: true, expectedVersion: 7 }), isStatus(status.ABORTED, /version 1, not 7/));
    await assert.rejects(api.setRoute('example.com', 'bogus'), isStatus(status.INVALID_ARGUMENT, /bogus/));
    await assert.rejects(api.removeRoute('example.org'), isStatus(status.NOT_FOUND));
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
    assert.deepEqual(await api.listRoutes(), { version: 3, routes: [{ match: 'example.net', target: OLD, hold: false, tls: 'required', verify: '' }] });
    // A stopped agent shows as disconnected, still expected.
    await agents[2]!.cleanup();
    await waitFor('a3 disconnected', async () => (await api.status()).agents.find((a) => a.id === 'a3')?.state === 'disconnected');
    // RemoveAgent: refused while connected, works when it is gone.
    await assert.rejects(api.removeAgent('a1'), isStatus(status.FAILED_PRECONDITION, /connected/));
    await api.removeAgent('a3');
    assert.deepEqual((await api.status()).agents.map((a) => a.id), ['a1', 'a2']);
  });

  test(`nack: an agent that cannot persist the table reports the error; hold fails naming it${label}`, async (t) => {
    const { ctl, api, defer } = await fleet(t, tr());
    await api.setRoute('example.com', OLD);
    const good = await tr().startAgent(ctl, 'good');
    const broken = await tr().startAgent(ctl, 'broken');
    defer(() => Promise.all([good.cleanup(), broken.cleanup()]));
    await waitFor('both at version 1', () => agentsAt(api, 1, 2));
    breakRoutePersistence(broken.config.dataDir, { snapshots: true });
    // A generous step timeout: the nack, not the timeout, must end the step (the report says which it was).
    const end = last(await api.hold('example.com', { timeoutMs: 30_000 }));
    assert.equal(end.operation?.state, 'failed');
    assert.match(end.operation!.error, /broken: .*EISDIR/);
    assert.match(end.operation!.error, /example\.com is held/);
    assert.deepEqual(end.failed.map((f) => f.split(':')[0]), ['broken']);
    const b = (await api.status()).agents.find((a) => a.id === 'broken')!;
    assert.equal(b.appliedVersion, 1, 'the old table stays in force');
    assert.match(b.lastError, /version 2 refused: .*EISDIR/);
    assert.equal(broken.agent.router.table.get('example.com')?.hold, undefined);
    // The nack ends the step at once; the good agent applies the hold in its own time.
    await waitFor('good holds example.com', () => good.agent.router.table.get('example.com')?.hold === true);
    assert.equal((await api.getOperation(end.operation!.id)).operation?.state, 'failed');
    // Follow on a finished operation replays its final state and ends.
    const replay = await api.follow(end.operation!.id);
    assert.equal(replay.length, 1);
    assert.equal(replay[0]!.operation?.state, 'failed');
    await assert.rejects(api.follow('op-nope'), isStatus(status.NOT_FOUND));
  });

  test(`commands: results correlated per agent; min_version refused by an agent that has not applied it${label}`, async (t) => {
    const { ctl, api, defer } = await fleet(t, tr());
    await api.setRoute('example.com', OLD);
    const a = await tr().startAgent(ctl, 'c1');
    const b = await tr().startAgent(ctl, 'c2');
    defer(() => Promise.all([a.cleanup(), b.cleanup()]));
    await waitFor('both at version 1', () => agentsAt(api, 1, 2));
    const list = await api.queueCommand({ kind: { $case: 'queueList', value: { match: '', state: '', limit: 10 } } });
    assert.deepEqual(
      list.results.map((r) => [r.agentId, r.ok, r.json]),
      [
        ['c1', true, '{"entries":[],"more":0}'],
        ['c2', true, '{"entries":[],"more":0}'],
      ],
    );
    const show = await api.queueCommand({ agentId: 'c1', kind: { $case: 'queueShow', value: { id: 'nope', body: false } } });
    assert.equal(show.results.length, 1);
    assert.equal(show.results[0]!.ok, false);
    assert.match(show.results[0]!.error, /NOT_FOUND: no message nope/);
    await assert.rejects(api.queueCommand({ agentId: 'ghost', kind: { $case: 'queueList', value: { match: '', state: '', limit: 0 } } }), isStatus(status.NOT_FOUND));

    // Directly through the session: a flush needing a version the agent does not have is refused (STALE_VERSION).
    // Command timeouts only bound the wait for the agent's answer (generous: the answer ends the wait).
    const stale = await ctl.controller.commands.command('c1', { kind: 'flush', match: 'example.com' }, 99, 30_000);
    assert.equal(stale.ok, false);
    assert.match(stale.error, /STALE_VERSION: command needs route table version 99, this agent has 1/);
    assert.deepEqual(await ctl.controller.commands.command('c1', { kind: 'flush', match: 'example.com' }, 1, 30_000), { ok: true, error: '', json: '{"due":0}' });
    // A flush operation requires the controller's current version: an agent behind it refuses, and the op fails.
    breakRoutePersistence(b.config.dataDir, { snapshots: true });
    await api.setRoute('example.net', OLD);
    await waitFor('c1 at version 2', () => a.agent.appliedVersion === 2);
    const end = last(await api.flush('', { timeoutMs: 30_000 }));
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

  test(`an agent silent for lostAfter is shown as lost${label}`, async (t) => {
    const { ctl, api, defer } = await fleet(t, tr(), { controller: { lostAfter: '300ms' } });
    const a = await tr().startAgent(ctl, 'l1');
    defer(() => a.cleanup());
    await waitFor('l1 connected', () => agentsAt(api, 0, 1));
    await a.cleanup();
    await waitFor('l1 disconnected or lost', async () => (await api.status()).agents[0]!.state !== 'connected');
    await waitFor('l1 lost', async () => (await api.status()).agents[0]!.state === 'lost', 30_000);
  });
}
