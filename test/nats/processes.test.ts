// `mxswitch controller` and `mxswitch agent` as real processes on the NATS control plane, driven by the CLI.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { tempDir, waitFor } from '../helpers/agent.js';
import { adminApi, deferrer } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { runCli } from '../cli/run-cli.js';

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(() => server.stop());

test('controller and agent processes over NATS: route set --wait, status, a stopped agent shows disconnected', async (t) => {
  const defer = deferrer(t);
  const dir = tempDir('mxs-natsproc-');
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const [grpcPort, smtpPort] = await Promise.all([freePort(), freePort()]);
  const token = 'admin-token-0123456789';
  const nats = { servers: [server.url], fleet: 'proc' };
  // NATS mode: no dataDir, no agent token.
  const controllerYaml = writeYaml(dir, 'controller.yaml', { grpc: { listen: `127.0.0.1:${grpcPort}` }, tokens: { admin: token }, nats, log: { level: 'warn' } });
  const agentYaml = writeYaml(dir, 'agent.yaml', {
    id: 'p1',
    dataDir: `${dir}/agent`,
    smtp: { listen: `127.0.0.1:${smtpPort}` },
    controller: { nats, healthInterval: '300ms' },
    log: { level: 'warn' },
  });
  const controller = await new CliProcess(['controller', '--config', controllerYaml], grpcPort).start();
  defer(() => controller.kill('SIGTERM'));
  const agent = await new CliProcess(['agent', '--config', agentYaml], smtpPort).start();
  defer(() => agent.kill('SIGTERM'));
  const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: `127.0.0.1:${grpcPort}`, MXSWITCH_TOKEN: token });
  // Waiting polls the admin API in-process (a CLI process per poll is slow); what is asserted goes through the CLI.
  const api = adminApi(`127.0.0.1:${grpcPort}`, token);
  defer(() => api.close());

  await waitFor('p1 connected', async () => (await api.status()).agents.some((a) => a.id === 'p1' && a.state === 'connected'), 15_000);
  const set = await cli('route', 'set', 'example.com', 'smtp:[127.0.0.1]:2', '--json', '--wait', '--timeout', '10s');
  assert.equal(set.code, 0, set.stderr);
  assert.deepEqual(JSON.parse(set.stdout), { match: 'example.com', target: 'smtp:[127.0.0.1]:2', hold: false, tls: 'may', verify: 'none', version: 1, appliedBy: ['p1'] });
  const status = JSON.parse((await cli('status', '--json')).stdout) as { version: number; agents: { id: string; state: string; appliedVersion: number }[] };
  assert.equal(status.version, 1);
  assert.deepEqual(status.agents.map((a) => [a.id, a.state, a.appliedVersion]), [['p1', 'connected', 1]]);

  await agent.kill('SIGTERM');
  await waitFor('p1 disconnected', async () => (await api.status()).agents[0]?.state === 'disconnected', 10_000);
  const after = JSON.parse((await cli('status', '--json')).stdout) as typeof status;
  assert.deepEqual(after.agents.map((a) => [a.id, a.state, a.appliedVersion]), [['p1', 'disconnected', 1]]);
});
