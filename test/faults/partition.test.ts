import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { smtpClient, tempDir, testMessage, waitFor } from '../helpers/agent.js';
import { AGENT_TOKEN, adminApi, deferrer, startController, type AdminApi } from '../helpers/controller.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

// How long each partition lasts (seconds). CI: 10; run it for minutes with MXSWITCH_PARTITION_SECONDS=300.
const SECONDS = Number(process.env.MXSWITCH_PARTITION_SECONDS ?? 10);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test(`long partition (${SECONDS} s twice): a real agent relays on its last table; health resumes with the right counters; versions converge`, { timeout: 120_000 + 4 * SECONDS * 1000 }, async (t) => {
  const defer = deferrer(t);
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const ctl = await startController();
  defer(() => ctl.cleanup());
  let api: AdminApi = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', sink.target);
  const v1 = (await api.listRoutes()).version;

  // The agent reaches the controller through a proxy that can cut the network.
  const proxy = await new TcpProxy(ctl.controller.grpcPort).start();
  defer(() => proxy.stop());
  const dir = tempDir('mxs-partition-');
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'part-agent',
    region: 'eu',
    dataDir: join(dir, 'data'),
    smtp: { listen: `127.0.0.1:${smtpPort}`, hostname: 'mx.test' },
    controller: { grpc: { address: proxy.address, token: AGENT_TOKEN }, healthInterval: '300ms' },
    http: { listen: `127.0.0.1:${httpPort}` },
    retry: { intervals: ['300ms'], jitter: 0 },
    delivery: { pollInterval: '50ms' },
    log: { level: 'error' },
  });
  const agent = await new CliProcess(['agent', '--config', config], smtpPort).start();
  defer(() => agent.kill('SIGTERM'));

  const status = async () => (await api.status()).agents.find((a) => a.id === 'part-agent');
  const healthz = async () => (await (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).json()) as { detail: { version: number; controllerConnected: boolean } };
  /** The controller shows the agent connected at `version` with these totals in its latest health report. */
  const reported = async (version: number, accepted: number, delivered: number) => {
    const a = await status();
    const c = a?.health?.counters;
    return a?.state === 'connected' && a.appliedVersion === version && c?.accepted === accepted && c.delivered === delivered;
  };

  let sent = 0;
  const client = smtpClient(smtpPort, { pool: true });
  defer(() => client.close());
  const relay = async (to: string) => {
    const n = ++sent;
    await client.sendMail({ envelope: { from: 's@sender.test', to: [to] }, raw: testMessage(n, to) });
  };
  /** Sends one message every 100 ms for `ms`; returns how many. */
  const relayFor = async (ms: number, to: string) => {
    const end = Date.now() + ms;
    let n = 0;
    while (Date.now() < end) {
      await relay(to);
      n++;
      await sleep(100);
    }
    return n;
  };

  // A fresh agent has no routes until the controller's table arrives (it refuses example.com until then).
  await waitFor('the agent applied the controller table', async () => (await status())?.appliedVersion === v1, 15_000);
  for (let i = 0; i < 5; i++) await relay('base@example.com');
  await waitFor('baseline health at the controller', () => reported(v1, 5, 5), 15_000);

  // 1. The controller is down (its process gone): the agent notices, keeps relaying on its last table.
  await ctl.controller.stop();
  await waitFor('the agent notices the controller is gone', async () => !(await healthz()).detail.controllerConnected, 30_000);
  const downStart = Date.now();
  const duringDown = await relayFor(SECONDS * 1000, 'down@example.com');
  await waitFor('mail relayed during the outage delivered', () => sink.messages.length === sent, 15_000);
  await ctl.restart();
  api.close();
  api = adminApi(ctl.address);
  const t1 = Date.now();
  await waitFor('health resumes with the outage counted', () => reported(v1, sent, sent), 30_000);
  const resumed1 = Date.now() - t1;
  const outage = Date.now() - downStart;

  // 2. A network partition: the controller runs, no packet passes. A route change made meanwhile must reach the
  //    agent once the network is back; until then it relays on the old table (the new domain is refused).
  proxy.partition();
  const partStart = Date.now();
  await api.setRoute('example.net', sink.target);
  const v2 = (await api.listRoutes()).version;
  assert.ok(v2 > v1);
  const duringPartition = await relayFor(SECONDS * 1000, 'cut@example.com');
  await assert.rejects(relay('new@example.net'), /550 5\.7\.1/, 'not routed on the old table');
  sent--; // refused: not relayed
  assert.equal((await healthz()).detail.version, v1, 'the agent cannot have the new table yet');
  await waitFor('mail relayed during the partition delivered', () => sink.messages.length === sent, 15_000);
  proxy.heal();
  const t2 = Date.now();
  await waitFor('health resumes and the version converges', () => reported(v2, sent, sent), 60_000);
  const resumed2 = Date.now() - t2;
  const partition = Date.now() - partStart;
  await relay('new@example.net');
  await waitFor('the new route works', () => sink.messages.length === sent, 10_000);
  await waitFor('final health', () => reported(v2, sent, sent), 10_000);

  const a = (await status())!;
  console.log(
    `partition: controller down ${(outage / 1000).toFixed(1)} s with ${duringDown} relayed, health resumed ${(resumed1 / 1000).toFixed(1)} s after restart; ` +
      `network cut ${(partition / 1000).toFixed(1)} s with ${duringPartition} relayed and version ${v2} published meanwhile, converged + health resumed ` +
      `${(resumed2 / 1000).toFixed(1)} s after heal; controller sees accepted=${a.health!.counters!.accepted} delivered=${a.health!.counters!.delivered} ` +
      `(sent ${sent}), version ${a.appliedVersion}, queue ${a.health!.totalQueued}`,
  );
  assert.equal(a.health!.totalQueued, 0);
});
