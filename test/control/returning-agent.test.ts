// Invariant 5 across an agent's absence: an agent that was stopped while a destination was held must not deliver
// there when it comes back, over either control plane, and still delivers once the controller is gone for good.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { messageIds, smtpClient, tempDir, testMessage, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN, adminApi, deferrer, last, type AdminApi } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';

let nats: NatsServer;
before(async () => {
  nats = await NatsServer.start();
});
after(() => nats.stop());

type Transport = 'grpc' | 'nats';

async function agentHealth(api: AdminApi, id: string) {
  return (await api.status()).agents.find((a) => a.id === id);
}

for (const transport of ['grpc', 'nats'] as const satisfies readonly Transport[]) {
  test(`${transport}: an agent stopped during a hold delivers nothing to the held server when it returns; after the switchover its mail reaches the new server once`, async (t) => {
    const defer = deferrer(t);
    const oldSink = await new Sink().start();
    const newSink = await new Sink().start();
    defer(() => oldSink.stop());
    defer(() => newSink.stop());
    const dir = tempDir('mxs-return-');
    defer(() => rmSync(dir, { recursive: true, force: true }));
    const grpcPort = await freePort();
    const natsSettings = { servers: [nats.url], fleet: `ret${Date.now() % 100000}` };
    const controllerYaml = writeYaml(dir, 'controller.yaml', {
      grpc: { listen: `127.0.0.1:${grpcPort}`, heartbeatInterval: '500ms', sessionTimeout: '5s' },
      tokens: transport === 'grpc' ? { agent: AGENT_TOKEN, admin: ADMIN_TOKEN } : { admin: ADMIN_TOKEN },
      stepTimeout: '20s',
      log: { level: 'warn' },
      ...(transport === 'grpc' ? { dataDir: `${dir}/controller` } : { nats: natsSettings }),
    });
    const ports = [await freePort(), await freePort()];
    const ids = ['ret-1', 'ret-2'];
    const yamls = ports.map((port, i) =>
      writeYaml(dir, `agent-${i}.yaml`, {
        id: ids[i],
        dataDir: `${dir}/agent-${i}`,
        smtp: { listen: `127.0.0.1:${port}` },
        controller: {
          ...(transport === 'grpc' ? { grpc: { address: `127.0.0.1:${grpcPort}`, token: AGENT_TOKEN } } : { nats: natsSettings }),
          healthInterval: '200ms',
          // Long enough that only the controller's table can open delivery in this test.
          startupGrace: '10m',
        },
        retry: { intervals: ['200ms'], jitter: 0 },
        delivery: { pollInterval: '50ms', resolvers: ['127.0.0.1:9'] },
        log: { level: 'warn' },
      }),
    );
    const controller = await new CliProcess(['controller', '--config', controllerYaml], grpcPort).start();
    defer(() => controller.kill('SIGTERM'));
    const agents = await Promise.all(yamls.map((y, i) => new CliProcess(['agent', '--config', y], ports[i]!).start()));
    defer(() => Promise.all(agents.map((a) => a.kill('SIGTERM'))));
    const api = adminApi(`127.0.0.1:${grpcPort}`);
    defer(() => api.close());

    const v1 = (await api.setRoute('example.com', oldSink.target)).version;
    await waitFor('both agents on v1', async () => (await api.status()).agents.filter((a) => a.state === 'connected' && a.appliedVersion >= v1).length === 2, 30_000);

    // The old server answers 421: ret-1 keeps 5 messages deferred.
    oldSink.dataReply = () => ({ code: 421, message: 'try later' });
    const client = smtpClient(ports[0]!);
    const sent: string[] = [];
    for (let n = 1; n <= 5; n++) {
      await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(n, 'u@example.com') });
      sent.push(`msg-${n}@sender.test`);
    }
    client.close();
    await waitFor('ret-1 holds 5 deferred', async () => (await agentHealth(api, 'ret-1'))?.health?.queues.reduce((s, q) => s + q.deferred, 0) === 5, 30_000);

    await agents[0]!.kill('SIGTERM');
    await waitFor('ret-1 gone', async () => (await agentHealth(api, 'ret-1'))?.state !== 'connected', 30_000);
    const hold = last(await api.hold('example.com', { exclude: ['ret-1'] }));
    assert.equal(hold.operation?.state, 'done', hold.operation?.error);
    // The old server would accept again now: from here on it must see no message and no connection.
    oldSink.dataReply = undefined;
    const oldConnections = oldSink.connections;
    const oldMessages = oldSink.messages.length;

    agents[0] = await new CliProcess(['agent', '--config', yamls[0]!], ports[0]!).start();
    const held = await api.status();
    await waitFor('ret-1 back, on the hold version, its 5 messages held', async () => {
      const a = await agentHealth(api, 'ret-1');
      return a?.state === 'connected' && a.appliedVersion >= held.version && a.health?.delivery?.open === true && a.health.queues.reduce((s, q) => s + q.held, 0) === 5;
    }, 30_000);

    const sw = last(await api.switchover('example.com', newSink.target));
    assert.equal(sw.operation?.state, 'done', sw.operation?.error);
    await waitFor('5 messages at the new server', () => newSink.messages.length >= 5, 30_000);
    assert.equal(oldSink.messages.length - oldMessages, 0, 'messages delivered to the held old server');
    assert.equal(oldSink.connections - oldConnections, 0, 'connections to the held old server');
    assert.deepEqual(messageIds(newSink.messages.map((m) => m.data)).sort(), sent.sort(), 'each message exactly once at the new server');
  });
}

for (const transport of ['grpc', 'nats'] as const satisfies readonly Transport[]) {
  // Over NATS the table lives in the NATS server, so "the controller is down" means the NATS server is.
  test(`${transport}: an agent restarted while the controller is down waits out controller.startupGrace, then delivers with its persisted table`, async (t) => {
    const defer = deferrer(t);
    const sink = await new Sink().start();
    defer(() => sink.stop());
    const dir = tempDir('mxs-grace-');
    defer(() => rmSync(dir, { recursive: true, force: true }));
    const own = transport === 'nats' ? await NatsServer.start() : undefined;
    defer(() => own?.stop());
    const natsSettings = own ? { servers: [own.url], fleet: 'grace' } : undefined;
    const [grpcPort, smtpPort, httpPort] = [await freePort(), await freePort(), await freePort()];
    const controllerYaml = writeYaml(dir, 'controller.yaml', {
      grpc: { listen: `127.0.0.1:${grpcPort}`, heartbeatInterval: '500ms', sessionTimeout: '5s' },
      tokens: natsSettings ? { admin: ADMIN_TOKEN } : { agent: AGENT_TOKEN, admin: ADMIN_TOKEN },
      log: { level: 'warn' },
      ...(natsSettings ? { nats: natsSettings } : { dataDir: `${dir}/controller` }),
    });
    const agentYaml = writeYaml(dir, 'agent.yaml', {
      id: 'grace-1',
      dataDir: `${dir}/agent`,
      smtp: { listen: `127.0.0.1:${smtpPort}` },
      http: { listen: `127.0.0.1:${httpPort}` },
      controller: {
        ...(natsSettings ? { nats: natsSettings } : { grpc: { address: `127.0.0.1:${grpcPort}`, token: AGENT_TOKEN } }),
        healthInterval: '200ms',
        startupGrace: '3s',
      },
      retry: { intervals: ['200ms'], jitter: 0 },
      delivery: { pollInterval: '50ms', resolvers: ['127.0.0.1:9'] },
      log: { level: 'warn' },
    });
    const controller = await new CliProcess(['controller', '--config', controllerYaml], grpcPort).start();
    let controllerUp = true;
    defer(() => (controllerUp ? controller.kill('SIGTERM') : undefined));
    let agent = await new CliProcess(['agent', '--config', agentYaml], smtpPort).start();
    defer(() => agent.kill('SIGTERM'));
    const api = adminApi(`127.0.0.1:${grpcPort}`);
    defer(() => api.close());
    const v1 = (await api.setRoute('example.com', sink.target)).version;
    await waitFor('grace-1 on v1', async () => (await agentHealth(api, 'grace-1'))?.appliedVersion === v1, 30_000);

    await agent.kill('SIGKILL');
    await controller.kill('SIGKILL');
    controllerUp = false;
    await own?.kill();
    agent = await new CliProcess(['agent', '--config', agentYaml], smtpPort).start();
    const startedAt = Date.now();
    const client = smtpClient(smtpPort);
    await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(1, 'u@example.com') });
    client.close();
    const healthz = async () => (await (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).json()) as { detail: { delivery: { open: boolean; reason: string } } };
    const delivering = async () => /^mxswitch_agent_delivering (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text())?.[1];
    const waiting = await healthz();
    assert.equal(waiting.detail.delivery.open, false, 'delivering before the grace while the controller is unreachable');
    assert.equal(await delivering(), '0', 'mxswitch_agent_delivering while waiting');
    await waitFor('delivered with the persisted table after the grace', () => sink.messages.length === 1, 30_000);
    const waited = sink.messages[0]!.at - startedAt;
    assert.ok(waited >= 2500, `delivered ${waited} ms after start, before the 3 s grace`);
    assert.match((await healthz()).detail.delivery.reason, /unreachable for the start-up grace/);
    assert.equal(await delivering(), '1', 'mxswitch_agent_delivering after the grace');
  });
}
