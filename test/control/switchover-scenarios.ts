import assert from 'node:assert/strict';
import { test } from 'node:test';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { Transporter } from 'nodemailer';
import { messageIds, smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { adminApi, agentsAt, deferrer, last } from '../helpers/controller.js';
import { Sink } from '../helpers/sink.js';
import type { Transport } from '../helpers/transport.js';

/** Sends distinct messages round-robin to the agents until stopped; records what each agent accepted (250). */
class Traffic {
  readonly accepted: string[] = [];
  readonly refused: string[] = [];
  private running = true;
  private readonly loops: Promise<void>[];
  private readonly clients: Transporter[];
  private n = 0;

  constructor(ports: number[]) {
    this.clients = ports.map((p) => smtpClient(p, { pool: true, maxConnections: 1 }));
    this.loops = this.clients.map((c) => this.loop(c));
  }

  private async loop(client: Transporter): Promise<void> {
    while (this.running) {
      const n = ++this.n;
      try {
        await client.sendMail({ envelope: { from: 'sender@sender.test', to: [`user${n % 5}@example.com`] }, raw: testMessage(n, `user${n % 5}@example.com`) });
        this.accepted.push(`msg-${n}@sender.test`);
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

/**
 * The controller issue's orchestration scenarios, registered once per transport (test/control/switchover.test.ts
 * over gRPC, test/nats/switchover.test.ts over NATS): the same bodies, only how agents reach the controller differs.
 */
export function switchoverScenarios(tr: () => Transport, label = ''): void {
  test(`hold then switchover --wait-drained across 3 agents under continuous traffic: zero loss, nothing at old after hold${label}`, async (t) => {
    const defer = deferrer(t);
    const oldSink = await new Sink().start();
    const newSink = await new Sink().start();
    const ctl = await tr().startController();
    const api = adminApi(ctl.address);
    defer(async () => {
      api.close();
      await ctl.cleanup();
      await oldSink.stop();
      await newSink.stop();
    });
    await api.setRoute('example.com', oldSink.target);
    const agents = await Promise.all(['mx-1', 'mx-2', 'mx-3'].map((id) => tr().startAgent(ctl, id)));
    defer(() => Promise.all(agents.map((a) => a.cleanup())));
    await waitFor('3 agents at version 1', () => agentsAt(api, 1, 3));

    const traffic = new Traffic(agents.map((a) => a.port));
    let stopped = false;
    defer(() => (stopped ? undefined : traffic.stop()));
    await waitFor('mail flowing to old', () => oldSink.messages.length >= 20);

    const hold = await api.hold('example.com');
    const holdEnd = last(hold);
    assert.equal(holdEnd.operation?.state, 'done', holdEnd.operation?.error);
    assert.deepEqual(holdEnd.acked, ['mx-1', 'mx-2', 'mx-3']);
    const oldAtHold = oldSink.messages.length;
    // Held mail accumulates while traffic goes on.
    const acceptedAtHold = traffic.accepted.length;
    await waitFor('mail accepted while held', () => traffic.accepted.length >= acceptedAtHold + 30);
    assert.equal(newSink.messages.length, 0);

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
    assert.equal(oldSink.messages.length, oldAtHold, 'nothing reached old after the hold completed');
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
    const defer = deferrer(t);
    const sink = await new Sink().start();
    const ctl = await tr().startController({ expectedAgents: ['e1', 'e2', 'e3'] });
    const api = adminApi(ctl.address);
    defer(async () => {
      api.close();
      await ctl.cleanup();
      await sink.stop();
    });
    await api.setRoute('example.com', sink.target);
    const e1 = await tr().startAgent(ctl, 'e1');
    const e2 = await tr().startAgent(ctl, 'e2');
    defer(() => Promise.all([e1.cleanup(), e2.cleanup()]));
    await waitFor('2 agents at version 1', () => agentsAt(api, 1, 2));
    await assert.rejects(api.hold('example.com'), (e: ServiceError) => e.code === status.FAILED_PRECONDITION && /e3 \(disconnected\)/.test(e.details) && /--exclude e3/.test(e.details));
    await e2.cleanup(true);
    await waitFor('e2 disconnected', async () => (await api.status()).agents.find((a) => a.id === 'e2')?.state === 'disconnected');
    await assert.rejects(api.hold('example.com', { exclude: ['e3'] }), (e: ServiceError) => e.code === status.FAILED_PRECONDITION && /e2 \(disconnected\)/.test(e.details) && !/e3/.test(e.details));
    assert.equal(ctl.controller.store.version, 1, 'a refused operation changes nothing');
    await assert.rejects(api.hold('example.com', { exclude: ['nobody'] }), (e: ServiceError) => e.code === status.INVALID_ARGUMENT);
    await assert.rejects(api.hold('example.org', { exclude: ['e2', 'e3'] }), (e: ServiceError) => e.code === status.NOT_FOUND);
    await assert.rejects(api.switchover('example.com', 'smtp:192.0.2.1', { exclude: ['e2', 'e3'] }), (e: ServiceError) => e.code === status.INVALID_ARGUMENT);

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
    const defer = deferrer(t);
    const sink = await new Sink().start();
    const ctl = await tr().startController();
    const api = adminApi(ctl.address);
    defer(async () => {
      api.close();
      await ctl.cleanup();
      await sink.stop();
    });
    await api.setRoute('example.com', sink.target);
    const a = await tr().startAgent(ctl, 's1');
    const b = await tr().startAgent(ctl, 's2');
    defer(() => Promise.all([a.cleanup(), b.cleanup()]));
    await waitFor('both at version 1', () => agentsAt(api, 1, 2));
    // s2 stops applying tables (but stays connected): its apply never completes.
    b.agent.applyTable = () => new Promise(() => undefined);
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
    const defer = deferrer(t);
    const sink = await new Sink().start();
    defer(() => sink.stop());
    const ctl = await tr().startController({ lostAfter: '60s' });
    defer(() => ctl.cleanup());
    const api = adminApi(ctl.address);
    defer(() => api.close());
    await api.setRoute('example.com', sink.target);
    const a = await tr().startAgent(ctl, 'd1');
    let b = await tr().startAgent(ctl, 'd2');
    defer(() => Promise.all([a.cleanup(), b.cleanup()]));
    await waitFor('both at version 1', () => agentsAt(api, 1, 2));
    b.agent.applyTable = () => new Promise(() => undefined);
    const run = api.switchover('example.com', 'smtp:[127.0.0.1]:9', { timeoutMs: 1000 });
    await waitFor('d1 acked the hold', () => a.agent.appliedVersion === 2);
    const dataDir = b.config.dataDir;
    await b.cleanup(true);
    const end = last(await run);
    assert.equal(end.operation?.state, 'failed');
    assert.match(end.operation!.error, /d2 \(disconnected, at version 1\)/);
    assert.match(end.operation!.error, /example\.com stays held/);
    assert.equal(a.agent.router.table.get('example.com')?.hold, true);
    // d2 comes back (same data dir): it starts from its persisted table and applies the newest one at once.
    b = await tr().startAgent(ctl, 'd2', { dataDir });
    await waitFor('d2 at the newest version', () => agentsAt(api, ctl.controller.store.version, 2));
    assert.equal(b.agent.router.table.get('example.com')?.hold, true);
    assert.equal(b.agent.router.table.get('example.com')?.target, sink.target);
  });
}
