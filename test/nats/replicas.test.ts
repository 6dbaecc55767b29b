import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitFor } from '../helpers/agent.js';
import { adminApi, agentsAt, deferrer, last, type AdminApi } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { Sink } from '../helpers/sink.js';
import { natsTransport } from '../helpers/transport.js';

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(() => server.stop());

/** What `status` says, without the fields that legitimately differ by the millisecond between two calls. */
async function view(api: AdminApi) {
  const s = await api.status();
  return {
    version: s.version,
    agents: s.agents.map((a) => ({ id: a.id, state: a.state, appliedVersion: a.appliedVersion, bootId: a.bootId, expected: a.expected, lastSeenMs: a.lastSeenMs, lastError: a.lastError })),
    operations: s.operations.map((o) => ({ id: o.id, kind: o.kind, match: o.match, state: o.state, step: o.step, error: o.error })),
  };
}

test('two controller replicas on one NATS: a change through either reaches the agents and both give the same answers', async (t) => {
  const defer = deferrer(t);
  const tr = natsTransport(server);
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const a = await tr.startController({ fleet: 'rep' });
  defer(() => a.cleanup());
  const b = await tr.startController({ fleet: 'rep' });
  defer(() => b.cleanup());
  const apiA = adminApi(a.address);
  const apiB = adminApi(b.address);
  defer(() => {
    apiA.close();
    apiB.close();
  });
  const agents = await Promise.all(['r1', 'r2'].map((id) => tr.startAgent(a, id)));
  defer(() => Promise.all(agents.map((x) => x.cleanup())));

  assert.equal((await apiA.setRoute('example.com', sink.target)).version, 1);
  await waitFor('B sees both agents at version 1', () => agentsAt(apiB, 1, 2));
  assert.deepEqual(await apiB.listRoutes(), await apiA.listRoutes());

  // Writes through both replicas at once: compare-and-set serialises them, nothing is lost, versions are unique.
  const [v1, v2] = await Promise.all([apiA.setRoute('example.net', sink.target), apiB.setRoute('example.org', sink.target)]);
  assert.deepEqual([v1.version, v2.version].sort(), [2, 3]);
  await waitFor('agents at version 3', () => agentsAt(apiA, 3, 2));
  // The two writes race, so the agents apply them in either order; the table is a set.
  for (const x of agents) assert.deepEqual(x.agent.router.table.routes.map((r) => r.match).sort(), ['example.com', 'example.net', 'example.org']);
  // An expected_version check sees the other replica's writes.
  await assert.rejects(apiA.setRoute('example.com', sink.target, { expectedVersion: 2 }), /version 3, not 2/);

  // A hold through B: agents apply it, and A reports the operation as B does.
  const hold = last(await apiB.hold('example.com'));
  assert.equal(hold.operation?.state, 'done', hold.operation?.error);
  for (const x of agents) assert.equal(x.agent.router.table.get('example.com')?.hold, true);
  await waitFor('both replicas report the same fleet', async () => JSON.stringify(await view(apiA)) === JSON.stringify(await view(apiB)));
  const s = await view(apiA);
  assert.equal(s.version, 4);
  assert.deepEqual(s.operations.map((o) => [o.kind, o.state]), [['hold', 'done']]);
  assert.deepEqual(s.agents.map((x) => [x.id, x.state, x.appliedVersion]), [
    ['r1', 'connected', 4],
    ['r2', 'connected', 4],
  ]);
  // One operation per route across replicas.
  const slow = agents[1]!.agent;
  const apply = slow.applyTable.bind(slow);
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  slow.applyTable = async (update) => {
    await gate;
    return apply(update);
  };
  const release = apiA.release('example.com');
  await waitFor('release running on A, seen by B', async () => (await apiB.status()).operations[0]?.state === 'running');
  await assert.rejects(apiB.hold('example.com'), /still running on example\.com/);
  // Follow on B the operation running on A.
  const followed = apiB.follow((await apiB.status()).operations[0]!.id);
  open();
  const [onA, onB] = await Promise.all([release, followed]);
  assert.equal(last(onA).operation?.state, 'done');
  assert.equal(last(onB).operation?.state, 'done', 'B followed it to the end');
  assert.equal(last(onB).message, last(onA).message);
  assert.deepEqual(last(onB).acked, ['r1', 'r2']);
  // Two operators start an operation on one route through both replicas at the same moment: exactly one runs.
  let open2!: () => void;
  const gate2 = new Promise<void>((r) => (open2 = r));
  slow.applyTable = async (update) => {
    await gate2;
    return apply(update);
  };
  const racing = [apiA.hold('example.net'), apiB.hold('example.net')].map((p) => p.then((r) => last(r).operation?.state ?? '', (e: Error) => e.message));
  // The gate stays shut until one of the two has its answer: the winner's hold cannot finish before the slow
  // agent applies it, so the loser is refused while the winner is still running however long either takes.
  // (If both started, neither answers before the step timeout, and both fail: the assertions below say so.)
  await Promise.race(racing);
  open2();
  const outcomes = await Promise.all(racing);
  assert.equal(outcomes.filter((o) => o === 'done').length, 1, outcomes.join(' | '));
  assert.equal(outcomes.filter((o) => /still running on example\.net|another operation is starting/.test(o)).length, 1, outcomes.join(' | '));
  slow.applyTable = apply;
});

test('a replica that stops mid-operation hands it over: the other resumes it and finishes', async (t) => {
  const defer = deferrer(t);
  const tr = natsTransport(server, { operationLease: '1500ms' });
  const a = await tr.startController({ fleet: 'handover' });
  defer(() => a.cleanup());
  const b = await tr.startController({ fleet: 'handover' });
  defer(() => b.cleanup());
  const apiA = adminApi(a.address);
  const apiB = adminApi(b.address);
  defer(() => {
    apiA.close();
    apiB.close();
  });
  await apiA.setRoute('example.com', 'smtp:[127.0.0.1]:2');
  const x = await tr.startAgent(a, 'h1');
  defer(() => x.cleanup());
  await waitFor('h1 at version 1', () => agentsAt(apiB, 1, 1));
  const apply = x.agent.applyTable.bind(x.agent);
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  x.agent.applyTable = async (update) => {
    await gate;
    return apply(update);
  };
  const stream = apiA.switchover('example.com', 'smtp:[127.0.0.1]:3', { timeoutMs: 10_000 }).catch((err: Error) => err);
  await waitFor('switchover waiting for the hold ack', async () => (await apiB.status()).operations[0]?.step === '1/4 hold');
  const id = (await apiB.status()).operations[0]!.id;
  await a.controller.stop();
  assert.ok((await stream) instanceof Error, 'A closed its stream when it stopped');
  open();
  const end = last(await apiB.follow(id));
  assert.equal(end.operation?.state, 'done', end.operation?.error);
  assert.equal(x.agent.router.table.get('example.com')?.target, 'smtp:[127.0.0.1]:3');
  assert.equal(x.agent.router.table.get('example.com')?.hold, undefined);
  const audit = (await b.controller.store.audit()).map((r) => r.action);
  assert.deepEqual(audit, ['release', 'set', 'hold', 'set'], 'each step ran once');
});
