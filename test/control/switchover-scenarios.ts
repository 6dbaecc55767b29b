import assert from 'node:assert/strict';
import { test } from 'node:test';
import { status } from '@grpc/grpc-js';
import type { Transporter } from 'nodemailer';
import { messageIds, smtpClient, testMessage, waitFor, type startAgent } from '../helpers/agent.js';
import { agentsAt, isStatus, last, type AdminApi } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { Sink } from '../helpers/sink.js';
import type { Transport } from '../helpers/transport.js';
import { recordAcks, type Applied } from '../helpers/wait.js';

/** Sends distinct messages round-robin to the agents until stopped; records what each agent accepted (250). */
class Traffic {
  readonly accepted: string[] = [];
  /** Message-ID -> index (in the ports given) of the agent that accepted it. */
  readonly acceptedBy = new Map<string, number>();
  readonly refused: string[] = [];
  private running = true;
  private readonly loops: Promise<void>[];
  private readonly clients: Transporter[];
  private n = 0;

  constructor(ports: number[]) {
    this.clients = ports.map((p) => smtpClient(p, { pool: true, maxConnections: 1 }));
    this.loops = this.clients.map((c, i) => this.loop(c, i));
  }

  private async loop(client: Transporter, agent: number): Promise<void> {
    while (this.running) {
      const n = ++this.n;
      try {
        await client.sendMail({ envelope: { from: 'sender@sender.test', to: [`user${n % 5}@example.com`] }, raw: testMessage(n, `user${n % 5}@example.com`) });
        this.accepted.push(`msg-${n}@sender.test`);
        this.acceptedBy.set(`msg-${n}@sender.test`, agent);
      } catch (err) {
        this.refused.push(`msg-${n}: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    for (const c of this.clients) c.close();
  }
}

type Agent = Awaited<ReturnType<typeof startAgent>>;

/** An agent's state in the controller's registry. */
async function agentState(api: AdminApi, id: string): Promise<{ state: string; appliedVersion: number } | undefined> {
  return (await api.status()).agents.find((a) => a.id === id);
}

/** The first table an agent acked in which `match` is held. */
function heldAck(applied: readonly Applied[], match: string): Applied | undefined {
  return applied.find((a) => a.error === undefined && a.routes.some((r) => r.match === match && r.hold));
}

/**
 * The controller issue's orchestration scenarios, registered once per transport (test/control/switchover.test.ts
 * over gRPC, test/nats/switchover.test.ts over NATS): the same bodies, only how agents reach the controller differs.
 */
export function switchoverScenarios(tr: () => Transport, label = ''): void {
  test(`hold then switchover --wait-drained across 3 agents under continuous traffic: zero loss, nothing at old after hold${label}`, async (t) => {
    const { api, agents, sinks, ctl, defer } = await fleet(t, tr(), { agents: ['mx-1', 'mx-2', 'mx-3'], sinks: 2, routes: ([old]) => ({ 'example.com': old!.target }) });
    const [oldSink, newSink] = sinks as [Sink, Sink];
    // When each agent acked each table, and how many connections the old sink had accepted at that moment.
    const oldConnectionsAtAck = new Map<Applied, number>();
    const acks = agents.map((a) => recordAcks(a.agent, (applied) => oldConnectionsAtAck.set(applied, oldSink.connections)));

    const traffic = new Traffic(agents.map((a) => a.port));
    let stopped = false;
    defer(() => (stopped ? undefined : traffic.stop()));
    await waitFor('mail flowing to old', () => oldSink.messages.length >= 20);

    const hold = await api.hold('example.com');
    const holdEnd = last(hold);
    assert.equal(holdEnd.operation?.state, 'done', holdEnd.operation?.error);
    assert.deepEqual(holdEnd.acked, ['mx-1', 'mx-2', 'mx-3']);
    // Nothing reached old after the agent that sent it acked the hold (the ack promises that nothing in flight
    // still goes there), and old accepted no connection at all once every agent had acked it. Measured against
    // each agent's own ack, not against the moment the client saw "done" (later by a round trip or more).
    const holdAcks = agents.map((a, i) => {
      const h = heldAck(acks[i]!, 'example.com');
      assert.ok(h, `${a.agent.agentId} acked a table holding example.com`);
      return h;
    });
    const lastAck = holdAcks.reduce((x, y) => (y.at > x.at ? y : x));
    const nothingAtOldSinceTheAcks = (when: string) => {
      const ids = messageIds(oldSink.messages.map((m) => m.data));
      for (const [k, m] of oldSink.messages.entries()) {
        const i = traffic.acceptedBy.get(ids[k]!);
        assert.ok(i !== undefined, `${ids[k]} at old was accepted by one of the agents`);
        assert.ok(m.at <= holdAcks[i]!.at, `${when}: ${ids[k]} reached old ${m.at - holdAcks[i]!.at} ms after ${agents[i]!.agent.agentId} acked the hold`);
      }
      assert.equal(oldSink.connections, oldConnectionsAtAck.get(lastAck), `${when}: old accepted a connection after every agent had acked the hold`);
    };
    // Held mail accumulates while traffic goes on.
    const acceptedAtHold = traffic.accepted.length;
    await waitFor('mail accepted while held', () => traffic.accepted.length >= acceptedAtHold + 30);
    assert.equal(newSink.messages.length, 0);
    nothingAtOldSinceTheAcks('while held');

    const progress = await api.switchover('example.com', newSink.target, { waitDrained: true, timeoutMs: 15_000 });
    const end = last(progress);
    assert.equal(end.operation?.state, 'done', end.operation?.error);
    const steps = [...new Set(progress.map((p) => p.operation!.step))];
    assert.deepEqual(steps, ['1/5 hold', '2/5 retarget', '3/5 release', '4/5 flush', '5/5 drain', 'done']);
    const drain = progress.filter((p) => p.drain.length).at(-1)!.drain;
    assert.deepEqual(drain.map((d) => d.agentId), ['mx-1', 'mx-2', 'mx-3']);
    assert.ok(drain.reduce((n, d) => n + Number(d.delivered), 0) > 0, 'per-agent delivered counts reported');
    // Progress names who acked and who is pending at each waiting step.
    assert.ok(progress.some((p) => p.waitingVersion > 0 && p.acked.length === 3 && p.pending.length === 0));

    await traffic.stop();
    stopped = true;
    const accepted = traffic.accepted;
    await waitFor('every accepted message delivered', () => oldSink.messages.length + newSink.messages.length >= accepted.length, 20_000);
    const atOld = messageIds(oldSink.messages.map((m) => m.data));
    const atNew = messageIds(newSink.messages.map((m) => m.data));
    nothingAtOldSinceTheAcks('after the switchover');
    const all = [...atOld, ...atNew];
    assert.equal(new Set(all).size, all.length, 'no message delivered twice');
    assert.deepEqual(new Set(all), new Set(accepted), 'every accepted message at exactly one sink');
    assert.deepEqual(traffic.refused, [], 'nothing refused');
    assert.ok(atNew.length > 30);
    for (const a of agents) {
      assert.equal(a.agent.router.table.get('example.com')?.target, newSink.target);
      assert.equal(a.agent.router.table.get('example.com')?.hold, undefined);
    }
    const audit = (await ctl.controller.store.audit()).map((r) => r.action);
    assert.deepEqual(audit, ['release', 'set', 'hold', 'set']);
  });

  test(`an expected agent that is disconnected blocks hold unless excluded; expectedAgents never seen blocks too${label}`, async (t) => {
    const { api, agents, ctl } = await fleet(t, tr(), { agents: ['e1', 'e2'], sinks: 1, routes: ([sink]) => ({ 'example.com': sink!.target }), controller: { expectedAgents: ['e1', 'e2', 'e3'] } });
    const [e1, e2] = agents as [Agent, Agent];
    await waitFor('2 agents at version 1', () => agentsAt(api, 1, 2));
    await assert.rejects(api.hold('example.com'), (e) => isStatus(status.FAILED_PRECONDITION, /e3 \(disconnected\)/)(e) && /--exclude e3/.test((e as Error).message));
    await e2.cleanup(true);
    await waitFor('e2 disconnected', async () => (await api.status()).agents.find((a) => a.id === 'e2')?.state === 'disconnected');
    await assert.rejects(api.hold('example.com', { exclude: ['e3'] }), (e) => isStatus(status.FAILED_PRECONDITION, /e2 \(disconnected\)/)(e) && !/e3/.test((e as Error).message));
    assert.equal(ctl.controller.store.version, 1, 'a refused operation changes nothing');
    await assert.rejects(api.hold('example.com', { exclude: ['nobody'] }), isStatus(status.INVALID_ARGUMENT));
    await assert.rejects(api.hold('example.org', { exclude: ['e2', 'e3'] }), isStatus(status.NOT_FOUND));
    await assert.rejects(api.switchover('example.com', 'smtp:192.0.2.1', { exclude: ['e2', 'e3'] }), isStatus(status.INVALID_ARGUMENT));

    const end = last(await api.hold('example.com', { exclude: ['e2', 'e3'] }));
    assert.equal(end.operation?.state, 'done', end.operation?.error);
    assert.deepEqual(end.operation?.excluded, ['e2', 'e3']);
    assert.equal(e1.agent.router.table.get('example.com')?.hold, true);
    const rel = last(await api.release('example.com', { exclude: ['e2', 'e3'] }));
    assert.equal(rel.operation?.state, 'done');
    const s = await api.status();
    assert.deepEqual(s.operations.map((o) => [o.kind, o.state]), [
      ['release', 'done'],
      ['hold', 'done'],
    ]);
  });

  test(`switchover step timeout: an agent that never acks fails the operation, names it, MATCH stays held${label}`, async (t) => {
    const { api, agents, sinks, ctl } = await fleet(t, tr(), { agents: ['s1', 's2'], sinks: 1, routes: ([sink]) => ({ 'example.com': sink!.target }) });
    const [, b] = agents as [Agent, Agent];
    const sink = sinks[0]!;
    // s2 stops applying tables (but stays connected): its apply never completes.
    b.agent.applyTable = () => new Promise(() => undefined);
    // The hold is in the table, and acked by s1, before the switchover starts: its hold step finds the route
    // held and waits for that version, which only s2 lacks. So the step timeout races nothing (when the
    // switchover wrote the hold itself, s1 had to ack within the timeout for the report to name s2 alone).
    // The switchover writing the hold itself is the first scenario's.
    await api.setRoute('example.com', sink.target, { hold: true });
    await waitFor('s1 acked version 2', async () => (await agentState(api, 's1'))?.appliedVersion === 2, 30_000);
    const end = last(await api.switchover('example.com', 'smtp:[127.0.0.1]:9', { timeoutMs: 700 }));
    assert.equal(end.operation?.state, 'failed');
    assert.equal(end.operation?.step, '1/4 hold');
    assert.match(end.operation!.error, /timed out after 700 ms waiting for version 2 from s2 \(connected, at version 1\)/);
    assert.match(end.operation!.error, /example\.com stays held/);
    assert.deepEqual(end.failed, ['s2 (connected, at version 1)']);
    const r = ctl.controller.store.get('example.com')!;
    assert.equal(r.hold, true);
    assert.equal(r.target, sink.target, 'the target was never changed');
  });

  test(`an agent that disconnects during a switchover fails it (named, MATCH held); when it returns it gets the newest table${label}`, async (t) => {
    const { api, agents, sinks, ctl, defer } = await fleet(t, tr(), { agents: ['d1', 'd2'], sinks: 1, routes: ([sink]) => ({ 'example.com': sink!.target }), controller: { lostAfter: '60s' } });
    const a = agents[0]!;
    let b = agents[1]!;
    const sink = sinks[0]!;
    // As in the step-timeout scenario: the hold is in force and acked by d1 before the switchover, which then
    // waits for d2 alone.
    b.agent.applyTable = () => new Promise(() => undefined);
    await api.setRoute('example.com', sink.target, { hold: true });
    await waitFor('d1 acked version 2', async () => (await agentState(api, 'd1'))?.appliedVersion === 2, 30_000);
    // A disconnected agent may come back within the step and ack, so only the step timeout ends this step: the
    // test lasts that long. It only has to outlast stopping d2 and the controller noticing, which the test waits
    // for and checks happened while the switchover was still waiting.
    const stepTimeoutMs = 10_000;
    const run = api.switchover('example.com', 'smtp:[127.0.0.1]:9', { timeoutMs: stepTimeoutMs });
    run.catch(() => undefined); // awaited below
    await waitFor('the switchover waiting for d2', async () => (await api.status()).operations[0]?.state === 'running', 30_000);
    const dataDir = b.config.dataDir;
    await b.cleanup(true);
    await waitFor('d2 shown disconnected', async () => (await agentState(api, 'd2'))?.state === 'disconnected', 30_000);
    const op = (await api.status()).operations[0];
    assert.equal(op?.state, 'running', `the switchover ended before d2's disconnect was seen (${op?.error}); the ${stepTimeoutMs} ms step timeout is too short here`);
    const end = last(await run);
    assert.equal(end.operation?.state, 'failed');
    assert.match(end.operation!.error, /d2 \(disconnected, at version 1\)/);
    assert.match(end.operation!.error, /example\.com stays held/);
    assert.equal(a.agent.router.table.get('example.com')?.hold, true);
    // d2 comes back (same data dir): it starts from its persisted table and applies the newest one at once.
    b = await tr().startAgent(ctl, 'd2', { dataDir });
    const returned = b;
    defer(() => returned.cleanup());
    await waitFor('d2 at the newest version', () => agentsAt(api, ctl.controller.store.version, 2));
    assert.equal(b.agent.router.table.get('example.com')?.hold, true);
    assert.equal(b.agent.router.table.get('example.com')?.target, sink.target);
  });
}
