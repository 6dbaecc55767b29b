import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { messageIds, smtpClient, tempDir, testMessage, waitFor, within } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN, adminApi, agentsAt, deferrer } from '../helpers/controller.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';

// Real processes: a controller and two agents as `mxswitch` children, killed with SIGKILL.
test('controller kill -9: agents keep relaying on their table; on restart they reconnect, converge, never go backwards; a killed agent restarts on its persisted table', async (t) => {
  // LIFO cleanup registered right after each start: a failing assertion leaves no process or sink running.
  const defer = deferrer(t);
  const dir = tempDir('mxs-kill-');
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const oldSink = await new Sink().start();
  defer(() => oldSink.stop());
  const newSink = await new Sink().start();
  defer(() => newSink.stop());
  const grpcPort = await freePort();
  const controllerConfig = writeYaml(dir, 'controller.yaml', {
    dataDir: `${dir}/controller`,
    grpc: { listen: `127.0.0.1:${grpcPort}`, heartbeatInterval: '500ms', sessionTimeout: '5s' },
    tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN },
    stepTimeout: '10s',
    log: { level: 'warn' },
  });
  const agentPorts = [await freePort(), await freePort()];
  const agentConfigs = agentPorts.map((port, i) =>
    writeYaml(dir, `agent-${i}.yaml`, {
      id: `kill-${i}`,
      dataDir: `${dir}/agent-${i}`,
      smtp: { listen: `127.0.0.1:${port}` },
      // A restart while the controller is down delivers once this much unreachable time has passed.
      controller: { grpc: { address: `127.0.0.1:${grpcPort}`, token: AGENT_TOKEN }, healthInterval: '300ms', startupGrace: '2s' },
      retry: { intervals: ['200ms'], jitter: 0 },
      delivery: { pollInterval: '50ms', resolvers: ['127.0.0.1:9'] },
      log: { level: 'warn' },
    }),
  );
  const startController = () => new CliProcess(['controller', '--config', controllerConfig], grpcPort).start();
  const startAgentProcess = (i: number) => new CliProcess(['agent', '--config', agentConfigs[i]!], agentPorts[i]!).start();
  let controller = await startController();
  defer(() => controller.kill('SIGTERM'));
  const agents: CliProcess[] = [];
  defer(() => Promise.all(agents.map((a) => a.kill('SIGTERM'))));
  // Both start at once; each one that started is stopped at the end, also when the other did not start.
  const starts = await Promise.allSettled(agentConfigs.map((_, i) => startAgentProcess(i)));
  for (const r of starts) if (r.status === 'fulfilled') agents.push(r.value);
  for (const r of starts) if (r.status === 'rejected') throw r.reason;
  const api = adminApi(`127.0.0.1:${grpcPort}`);
  defer(() => api.close());
  const sent: string[] = [];
  const send = async (agent: number, n: number) => {
    const client = smtpClient(agentPorts[agent]!);
    try {
      await within(`agent ${agent} accepts message ${n}`, client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(n) }));
    } finally {
      client.close();
    }
    sent.push(`msg-${n}@sender.test`);
  };
  const setRoute = async (target: string) => (await within(`route set to ${target}`, api.setRoute('example.com', target))).version;

  const v1 = await setRoute(oldSink.target);
  await waitFor('both agents on v1', () => agentsAt(api, v1, 2));
  await send(0, 1);
  await send(1, 2);
  await waitFor('delivered to old', () => oldSink.messages.length === 2);

  // Controller dies: agents keep accepting and delivering with the table they have.
  await controller.kill('SIGKILL');
  for (let n = 3; n < 13; n++) await send(n % 2, n);
  await waitFor('relayed without a controller', () => oldSink.messages.length === 12);

  // An agent killed while the controller is still down comes back on its persisted table (after the grace).
  await agents[0]!.kill('SIGKILL');
  agents[0] = await startAgentProcess(0);
  await send(0, 13);
  await waitFor('restarted agent relays on its persisted table', () => oldSink.messages.length === 13);

  controller = await startController();
  await waitFor('agents reconnected on v1', () => agentsAt(api, v1, 2), 20_000);
  const v2 = await setRoute(newSink.target);
  assert.ok(v2 > v1, `version went backwards: ${v2} after ${v1}`);
  await waitFor('both agents on v2', () => agentsAt(api, v2, 2));
  await send(1, 14);
  await waitFor('delivered to new', () => newSink.messages.length === 1);
  const all = messageIds([...oldSink.messages, ...newSink.messages].map((m) => m.data));
  assert.deepEqual([...new Set(all)].sort(), [...sent].sort(), 'lost or unexpected messages');
});
