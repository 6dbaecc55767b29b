import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { Spool } from '../../agent/spool/spool.js';
import { messageIds, smtpClient, tempDir, testMessage, waitFor, within } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN, adminApi, agentsAt, deferrer } from '../helpers/controller.js';
import { CliProcess, freePort, runCli, writeYaml } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';

/** Recipients in the queue file of a running agent (read-only look). */
const queued = (dataDir: string) => Spool.readFile(dataDir, ({ views }) => views.stats().total);
/** Shadow copies kept in an agent's queue file for its clients. */
const shadowCopies = (dataDir: string) => Spool.readFile(dataDir, ({ shadow }) => shadow.copyCount());

// Real processes: a controller and three agents in three regions as `mxswitch` children; one is SIGKILLed and its
// disk deleted. Its peer takes it over and, after a switchover, every message any agent acknowledged arrives.
test('host loss during a hold: SIGKILL an agent and delete its dataDir; its peer takes over; switchover --wait-drained delivers every acknowledged message to the new server, none to the old', async (t) => {
  const defer = deferrer(t);
  const dir = tempDir('mxs-takeover-');
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const oldSink = await new Sink().start();
  defer(() => oldSink.stop());
  const newSink = await new Sink().start();
  defer(() => newSink.stop());
  const grpcPort = await freePort();
  const controllerConfig = writeYaml(dir, 'controller.yaml', {
    dataDir: `${dir}/controller`,
    grpc: { listen: `127.0.0.1:${grpcPort}`, heartbeatInterval: '300ms', sessionTimeout: '3s' },
    tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN },
    stepTimeout: '20s',
    log: { level: 'warn' },
  });
  const ids = ['tk-a', 'tk-b', 'tk-c'];
  const smtpPorts = await Promise.all(ids.map(() => freePort()));
  const shadowPorts = await Promise.all(ids.map(() => freePort()));
  const configs = ids.map((id, i) =>
    writeYaml(dir, `${id}.yaml`, {
      id,
      region: `region-${i}`,
      dataDir: `${dir}/${id}`,
      smtp: { listen: `127.0.0.1:${smtpPorts[i]}` },
      controller: { grpc: { address: `127.0.0.1:${grpcPort}`, token: AGENT_TOKEN }, healthInterval: '300ms', startupGrace: '2s' },
      shadow: { listen: `127.0.0.1:${shadowPorts[i]}`, takeoverAfter: '2s', timeout: '3s' },
      retry: { intervals: ['200ms'], jitter: 0 },
      delivery: { pollInterval: '50ms', resolvers: ['127.0.0.1:9'] },
      log: { level: 'warn' },
    }),
  );
  const controller = await new CliProcess(['controller', '--config', controllerConfig], grpcPort).start();
  defer(() => controller.kill('SIGTERM'));
  const api = adminApi(`127.0.0.1:${grpcPort}`);
  defer(() => api.close());
  const v = (await api.setRoute('example.com', oldSink.target, { hold: true })).version;
  const agents = await Promise.all(ids.map((_, i) => new CliProcess(['agent', '--config', configs[i]!], smtpPorts[i]!).start()));
  defer(() => Promise.all(agents.map((a) => a.kill('SIGTERM'))));
  await waitFor('three agents on the held route', () => agentsAt(api, v, 3), 20_000);

  // Traffic to all three; only what got a 250 counts as acknowledged.
  const acked: string[] = [];
  const sendTo = async (agent: number, n: number) => {
    const client = smtpClient(smtpPorts[agent]!);
    try {
      await within(`message ${n} to ${ids[agent]}`, client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(n) }));
      acked.push(`msg-${n}@sender.test`);
    } finally {
      client.close();
    }
  };
  // The first messages may go before the pairing reached everyone (accepted with one copy, then re-shadowed).
  for (let n = 0; n < 30; n++) await sendTo(n % 3, n);
  assert.equal(acked.length, 30);
  // Every agent's copies are at its peer (ring a -> b -> c -> a): each holds 10 copies for its client.
  await waitFor('every message shadowed', () => ids.every((id) => shadowCopies(`${dir}/${id}`) === 10), 20_000);

  // Host loss: tk-b dies and its disk is gone.
  await agents[1]!.kill('SIGKILL');
  rmSync(`${dir}/tk-b`, { recursive: true, force: true });
  // tk-c held tk-b's copies: after takeoverAfter (and tk-c's "unreachable" report) they are in its queue.
  await waitFor("tk-b's mail taken over into tk-c's queue", () => queued(`${dir}/tk-c`) === 20, 30_000);
  const origins = Spool.readFile(`${dir}/tk-c`, ({ shadow }) => new Set(shadow.list(1000).map((c) => c.origin)));
  assert.ok(!origins.has('tk-b'), "tk-b's copies left tk-c's shadow tables for its queue");
  // tk-a's peer was tk-b: it is re-paired with tk-c and copies its queue there again.
  await waitFor("tk-a's mail re-shadowed to tk-c", () => shadowCopies(`${dir}/tk-c`) === 10, 20_000);
  const status = await runCli(['status', '--controller', `127.0.0.1:${grpcPort}`], { MXSWITCH_TOKEN: ADMIN_TOKEN });
  assert.match(status.stdout, /tk-b: taken over by tk-c/, status.stdout);
  assert.match(status.stdout, /tk-c: peer tk-a, \d+ unshadowed, \d+ copies kept for others, took over tk-b/, status.stdout);

  const cli = await runCli(['switchover', 'example.com', '--to', newSink.target, '--wait-drained', '--exclude', 'tk-b', '--controller', `127.0.0.1:${grpcPort}`], { MXSWITCH_TOKEN: ADMIN_TOKEN }, 90_000);
  assert.equal(cli.code, 0, `switchover: ${cli.stdout}\n${cli.stderr}`);
  const arrived = messageIds(newSink.messages.map((m) => m.data));
  const missing = acked.filter((id) => !arrived.includes(id));
  const duplicates = arrived.length - new Set(arrived).size;
  t.diagnostic(`acknowledged ${acked.length}, arrived at the new server ${arrived.length} (${new Set(arrived).size} distinct), duplicates ${duplicates}, at the old server ${oldSink.messages.length}`);
  assert.deepEqual(missing, [], 'every acknowledged message arrives at the new server');
  assert.equal(oldSink.messages.length, 0, 'nothing reaches the old server after the hold');
});

