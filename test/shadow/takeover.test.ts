import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { Spool } from '../../agent/spool/spool.js';
import { messageIds, smtpClient, tempDir, testMessage, waitFor, within } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN, adminApi, agentsAt, deferrer } from '../helpers/controller.js';
import { CliProcess, freePort, runCli, writeYaml } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';
import { copiedHolds } from './helpers.js';

/** Recipients in the queue file of a running agent (read-only look). */
const queued = (dataDir: string) => Spool.readFile(dataDir, ({ views }) => views.stats().total);
/** Shadow copies kept in an agent's queue file for its clients. */
const shadowCopies = (dataDir: string) => Spool.readFile(dataDir, ({ shadow }) => shadow.copyCount());

const IDS = ['tk-a', 'tk-b', 'tk-c'];

/**
 * Real processes: a controller and three agents in three regions (ring tk-a -> tk-b -> tk-c -> tk-a) as `mxswitch`
 * children, example.com routed to `target` (held or not). `sendTo` sends message n to one agent and records it as
 * acknowledged only on its 250; `metric` reads one agent's /metrics.
 */
async function threeAgents(t: { after: (fn: () => Promise<void>) => void }, target: string, hold: boolean, opts: { maxAge?: string; routes?: Record<string, string> } = {}) {
  const defer = deferrer(t);
  const dir = tempDir('mxs-takeover-');
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const grpcPort = await freePort();
  const controller = `127.0.0.1:${grpcPort}`;
  const controllerConfig = writeYaml(dir, 'controller.yaml', {
    dataDir: `${dir}/controller`,
    grpc: { listen: controller, heartbeatInterval: '300ms', sessionTimeout: '3s' },
    tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN },
    stepTimeout: '20s',
    log: { level: 'warn' },
  });
  const smtpPorts = await Promise.all(IDS.map(() => freePort()));
  const shadowPorts = await Promise.all(IDS.map(() => freePort()));
  const httpPorts = await Promise.all(IDS.map(() => freePort()));
  const configs = IDS.map((id, i) =>
    writeYaml(dir, `${id}.yaml`, {
      id,
      region: `region-${i}`,
      dataDir: `${dir}/${id}`,
      smtp: { listen: `127.0.0.1:${smtpPorts[i]}` },
      controller: { grpc: { address: controller, token: AGENT_TOKEN }, healthInterval: '300ms', startupGrace: '2s' },
      shadow: { listen: `127.0.0.1:${shadowPorts[i]}`, takeoverAfter: '2s', timeout: '3s' },
      http: { listen: `127.0.0.1:${httpPorts[i]}` },
      retry: { intervals: ['200ms'], jitter: 0, ...(opts.maxAge ? { maxAge: opts.maxAge } : {}) },
      delivery: { pollInterval: '50ms', resolvers: ['127.0.0.1:9'] },
      log: { level: 'warn' },
    }),
  );
  const ctl = await new CliProcess(['controller', '--config', controllerConfig], grpcPort).start();
  defer(() => ctl.kill('SIGTERM'));
  const api = adminApi(controller);
  defer(() => api.close());
  for (const [match, to] of Object.entries(opts.routes ?? {})) await api.setRoute(match, to);
  const v = (await api.setRoute('example.com', target, { hold })).version;
  const agents = await Promise.all(IDS.map((_, i) => new CliProcess(['agent', '--config', configs[i]!], smtpPorts[i]!).start()));
  defer(() => Promise.all(agents.map((a) => a.kill('SIGTERM'))));
  // Three agent processes from source under a loaded CI machine: their start, not the protocol, takes the time.
  await waitFor('three agents on the route', () => agentsAt(api, v, 3), 60_000);

  const acked: string[] = [];
  const sendTo = async (agent: number, n: number, to = 'u@example.com') => {
    const client = smtpClient(smtpPorts[agent]!);
    try {
      await within(`message ${n} to ${IDS[agent]}`, client.sendMail({ envelope: { from: 's@sender.test', to: [to] }, raw: testMessage(n) }));
      acked.push(`msg-${n}@sender.test`);
    } finally {
      client.close();
    }
  };
  const metric = async (agent: number, name: string) => {
    const text = await (await fetch(`http://127.0.0.1:${httpPorts[agent]}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  };
  const status = () => runCli(['status', '--controller', controller], { MXSWITCH_TOKEN: ADMIN_TOKEN });
  return { dir, controller, api, agents, acked, sendTo, metric, status };
}

/** What arrived at `sink` against what was acknowledged: none missing; duplicates counted and reported. */
function arrivals(t: { diagnostic: (m: string) => void }, sink: Sink, acked: readonly string[], what: string) {
  const arrived = messageIds(sink.messages.map((m) => m.data));
  const missing = acked.filter((id) => !arrived.includes(id));
  const duplicates = arrived.length - new Set(arrived).size;
  t.diagnostic(`${what}: acknowledged ${acked.length}, arrived ${arrived.length} (${new Set(arrived).size} distinct), duplicates ${duplicates}`);
  return { missing, duplicates };
}

test('host loss during a hold: SIGKILL an agent and delete its dataDir; its peer takes over; switchover --wait-drained delivers every acknowledged message to the new server, none to the old', async (t) => {
  const oldSink = await new Sink().start();
  t.after(() => oldSink.stop());
  const newSink = await new Sink().start();
  t.after(() => newSink.stop());
  const { dir, controller, agents, acked, sendTo, status } = await threeAgents(t, oldSink.target, true);
  // The first messages may go before the pairing reached everyone (accepted with one copy, then re-shadowed).
  for (let n = 0; n < 30; n++) await sendTo(n % 3, n);
  assert.equal(acked.length, 30);
  // Every agent's copies are at its peer: each holds 10 copies for its client.
  await waitFor('every message shadowed', () => IDS.every((id) => shadowCopies(`${dir}/${id}`) === 10), 20_000);

  // Host loss: tk-b dies and its disk is gone.
  await agents[1]!.kill('SIGKILL');
  rmSync(`${dir}/tk-b`, { recursive: true, force: true });
  // tk-c held tk-b's copies: after takeoverAfter (and tk-c's "unreachable" report) they are in its queue.
  await waitFor("tk-b's mail taken over into tk-c's queue", () => queued(`${dir}/tk-c`) === 20, 30_000);
  const origins = Spool.readFile(`${dir}/tk-c`, ({ shadow }) => new Set(shadow.list(1000).map((c) => c.origin)));
  assert.ok(!origins.has('tk-b'), "tk-b's copies left tk-c's shadow tables for its queue");
  // tk-a's peer was tk-b: it is re-paired with tk-c and copies its queue there again.
  await waitFor("tk-a's mail re-shadowed to tk-c", () => shadowCopies(`${dir}/tk-c`) === 10, 20_000);
  const shown = await status();
  assert.match(shown.stdout, /tk-b: taken over by tk-c/, shown.stdout);
  assert.match(shown.stdout, /tk-c: peer tk-a, \d+ unshadowed, \d+ copies kept for others, took over tk-b/, shown.stdout);

  const cli = await runCli(['switchover', 'example.com', '--to', newSink.target, '--wait-drained', '--exclude', 'tk-b', '--controller', controller], { MXSWITCH_TOKEN: ADMIN_TOKEN }, 90_000);
  assert.equal(cli.code, 0, `switchover: ${cli.stdout}\n${cli.stderr}`);
  const { missing } = arrivals(t, newSink, acked, 'new server');
  assert.deepEqual(missing, [], 'every acknowledged message arrives at the new server');
  assert.equal(oldSink.messages.length, 0, 'nothing reaches the old server after the hold');
});

test('host loss with mail flowing: SIGKILL an agent while its deliveries are in flight to a slow next hop and delete its dataDir; after the takeover every acknowledged message arrives, duplicates counted', async (t) => {
  const sink = await new Sink().start();
  t.after(() => sink.stop());
  // A slow next hop: each agent has deliveries in flight at any moment of the traffic.
  sink.dataDelayMs = 400;
  const { dir, agents, acked, sendTo, metric, status } = await threeAgents(t, sink.target, false);
  // Traffic to all three; tk-b is killed right after its 10th acknowledged message, the others keep receiving.
  let n = 0;
  const traffic = async (agent: number, count: number) => {
    for (let i = 0; i < count; i++) await sendTo(agent, n++);
  };
  const others = Promise.all([traffic(0, 20), traffic(2, 20)]);
  await traffic(1, 10);
  await agents[1]!.kill('SIGKILL');
  rmSync(`${dir}/tk-b`, { recursive: true, force: true });
  await others;
  assert.equal(acked.length, 50);

  // tk-c takes tk-b over and delivers what tk-b had not finished: every acknowledged message arrives.
  await waitFor('tk-b taken over', async () => /tk-b: taken over by tk-c/.test((await status()).stdout), 30_000);
  await waitFor('every acknowledged message delivered', () => new Set(messageIds(sink.messages.map((m) => m.data))).size >= acked.length, 60_000);
  await waitFor('queues empty', () => queued(`${dir}/tk-a`) === 0 && queued(`${dir}/tk-c`) === 0, 30_000);
  const { missing, duplicates } = arrivals(t, sink, acked, 'next hop');
  const adopted = await metric(2, 'mxswitch_shadow_taken_over_messages_total');
  t.diagnostic(`tk-c took over ${adopted} of tk-b's messages (in flight or queued at the kill); duplicates ${duplicates}`);
  assert.deepEqual(missing, [], 'every acknowledged message arrives');
  assert.ok(adopted > 0, 'the kill left tk-b with undelivered mail: the takeover delivered it');
  // A duplicate is a delivery tk-b made whose discard notice died with it: at most what tk-c took over.
  assert.ok(duplicates <= adopted, `duplicates ${duplicates} <= taken over ${adopted}`);
});

test('held time travels with the shadow copy: a hold longer than retry.maxAge, SIGKILL the agent and delete its dataDir, its peer takes over; after the release a tempfail at the next hop defers, and every message is delivered, none bounced', async (t) => {
  const sink = await new Sink().start();
  t.after(() => sink.stop());
  const dsnSink = await new Sink().start();
  t.after(() => dsnSink.stop());
  // Each recipient's first attempt after the release is refused for now: that is where expiry is checked.
  const refused = new Set<string>();
  sink.rcptPolicy = (rcpt) => (refused.has(rcpt) ? undefined : (refused.add(rcpt), { code: 450, message: '4.2.0 try again later' }));
  const MAX_AGE_MS = 3_000;
  const { dir, api, agents, acked, sendTo } = await threeAgents(t, sink.target, true, { maxAge: `${MAX_AGE_MS}ms`, routes: { 'sender.test': dsnSink.target } });
  const N = 6;
  for (let n = 0; n < N; n++) await sendTo(1, n, `u${n}@example.com`);
  const lastAck = Date.now();
  assert.equal(acked.length, N);
  // tk-b held them (held route) and told tk-c, which keeps its copies: every copied recipient is held there too.
  await waitFor("tk-c knows tk-b's recipients are held", () => copiedHolds(`${dir}/tk-c`, 'tk-b').filter((r) => r.holdSince !== null).length === N, 20_000);
  // The hold outlasts retry.maxAge on tk-b before it is lost.
  await waitFor('held longer than retry.maxAge', () => Date.now() > lastAck + MAX_AGE_MS + 1_000, MAX_AGE_MS + 5_000);

  await agents[1]!.kill('SIGKILL');
  rmSync(`${dir}/tk-b`, { recursive: true, force: true });
  await waitFor("tk-b's mail taken over into tk-c's queue", () => queued(`${dir}/tk-c`) === N, 30_000);
  await api.setRoute('example.com', sink.target);

  // Delivered after one deferral each, or (time held lost) bounced 5.4.7 with a DSN to the sender's domain.
  await waitFor('every message delivered or a DSN sent', () => new Set(messageIds(sink.messages.map((m) => m.data))).size >= N || dsnSink.messages.length > 0, 60_000);
  t.diagnostic(`delivered ${sink.messages.length}, DSNs ${dsnSink.messages.length}, first attempts refused ${refused.size}`);
  assert.deepEqual(dsnSink.messages.map((m) => m.data.toString('latin1').match(/^Status: .*$/m)?.[0]), [], 'no DSN: nothing expired');
  assert.equal(refused.size, N, 'each recipient was deferred once after the release (the expiry check ran)');
  const delivered = new Map(sink.messages.map((m) => [messageIds([m.data])[0]!, m]));
  assert.deepEqual([...delivered.keys()].sort(), [...acked].sort());
  for (let n = 0; n < N; n++) {
    const m = delivered.get(`msg-${n}@sender.test`)!;
    assert.deepEqual(m.to, [`u${n}@example.com`]);
    assert.ok(m.data.includes(testMessage(n)), `message ${n} arrived with its bytes`);
  }
  await waitFor("tk-c's queue empty", () => queued(`${dir}/tk-c`) === 0, 20_000);
});
