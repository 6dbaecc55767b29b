import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { test } from 'node:test';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { AgentServiceClient, SessionRequest } from '../../proto/gen/mxswitch/v1/agent.js';
import { Controller } from '../../control/controller.js';
import type { WatchResponse } from '../../proto/gen/mxswitch/v1/admin.js';
import { ConfigError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/logger.js';
import { tempDir, waitFor, within } from '../helpers/agent.js';
import { makePki } from '../helpers/certs.js';
import { adminApi, agentsAt, deferrer, startController, startFleetAgent, testControllerConfig, isStatus } from '../helpers/controller.js';
import { startLoggedFleetAgent } from '../helpers/wait.js';

/**
 * A TLS connection to the controller's gRPC port, as far as the server lets it go: whether the handshake
 * completed (client side) and whether the server then sent any HTTP/2 byte (its SETTINGS frame) before closing.
 * Under TLS 1.3 the server judges a client certificate after the client's handshake is done, so a refused
 * certificate shows as "handshake done, closed without a byte"; an accepted one gets the server's SETTINGS.
 */
function tlsProbe(port: number, opts: ConnectionOptions): Promise<{ handshake: boolean; serverSpoke: boolean; error: string }> {
  return new Promise((resolve) => {
    let handshake = false;
    let serverSpoke = false;
    let error = '';
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ALPNProtocols: ['h2'], ...opts });
    s.on('secureConnect', () => (handshake = true));
    s.on('data', () => {
      serverSpoke = true;
      s.destroy();
    });
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => resolve({ handshake, serverSpoke, error }));
  });
}

test('plaintext on a non-loopback address is refused unless allowInsecureRemote', async (t) => {
  const defer = deferrer(t);
  const config = testControllerConfig({ grpc: { listen: '0.0.0.0:0' } });
  defer(() => rmSync(config.dataDir!, { recursive: true, force: true }));
  await assert.rejects(new Controller(config, silentLogger).start(), (e: ConfigError) => e instanceof ConfigError && /grpc\.listen: .*plaintext.*allowInsecureRemote/.test(e.message));
  const allowed = new Controller(testControllerConfig({ dataDir: config.dataDir, grpc: { listen: '0.0.0.0:0', allowInsecureRemote: true } }), silentLogger);
  await allowed.start();
  defer(() => allowed.stop());
  assert.ok(allowed.grpcPort > 0);
  assert.equal(allowed.address, `127.0.0.1:${allowed.grpcPort}`);
});

test('TLS and mutual TLS: agents and admins connect with the CA (and a client certificate when required); an agent id must match its certificate', async (t) => {
  const defer = deferrer(t);
  const dir = tempDir('mxs-pki-');
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makePki(dir);
  const ctl = await startController({ grpc: { tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: true } } });
  defer(() => ctl.cleanup());
  const read = (f: string) => readFileSync(f);
  const good = adminApi(ctl.address, undefined, credentials.createSsl(read(pki.ca), read(pki.clientKey), read(pki.clientCert)));
  const noCert = adminApi(ctl.address, undefined, credentials.createSsl(read(pki.ca)));
  const stranger = adminApi(ctl.address, undefined, credentials.createSsl(read(pki.ca), read(pki.strangerKey), read(pki.strangerCert)));
  const plain = adminApi(ctl.address);
  defer(() => [good, noCert, stranger, plain].forEach((c) => c.close()));
  assert.equal((await good.listRoutes()).version, 0);
  // Each refusal is the server's: gRPC says UNAVAILABLE for any failed connection (also for a server that is
  // down), so what the server did is checked too: the TLS alert, or a probe at the TLS level, and the good
  // client still served right after.
  await assert.rejects(noCert.listRoutes(), isStatus(status.UNAVAILABLE, /alert certificate required/), 'no client certificate');
  await assert.rejects(stranger.listRoutes(), isStatus(status.UNAVAILABLE), 'client certificate from another CA');
  await assert.rejects(plain.listRoutes(), isStatus(status.UNAVAILABLE), 'plaintext client');
  const port = ctl.controller.grpcPort;
  assert.deepEqual(await tlsProbe(port, { ca: read(pki.ca), cert: read(pki.clientCert), key: read(pki.clientKey) }), { handshake: true, serverSpoke: true, error: '' }, 'our CA\'s client certificate');
  assert.deepEqual(await tlsProbe(port, { ca: read(pki.ca), cert: read(pki.strangerCert), key: read(pki.strangerKey) }), { handshake: true, serverSpoke: false, error: '' }, 'the server drops a client certificate from another CA');
  assert.deepEqual(await tlsProbe(port, { ca: read(pki.ca) }), { handshake: true, serverSpoke: false, error: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' }, 'no client certificate');
  assert.equal((await good.listRoutes()).version, 0, 'the server kept serving');

  await good.setRoute('example.com', 'smtp:[127.0.0.1]:2');
  // The client certificate's CN is "mx-agent": that agent id gets in, another id with the same certificate does not.
  const agent = await startFleetAgent(ctl.address, 'mx-agent', { controller: { grpc: { address: ctl.address, token: ctl.config.tokens.agent, tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } }, healthInterval: '200ms' } });
  const impostor = await startLoggedFleetAgent(ctl.address, 'tls-1', { controller: { grpc: { address: ctl.address, token: ctl.config.tokens.agent, tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } }, healthInterval: '200ms' } });
  const certless = await startLoggedFleetAgent(ctl.address, 'tls-2', { controller: { grpc: { address: ctl.address, token: ctl.config.tokens.agent, tls: { ca: pki.ca } }, healthInterval: '200ms' } });
  defer(() => Promise.all([agent.cleanup(), impostor.cleanup(), certless.cleanup()]));
  await waitFor('tls agent applied version 1', () => agentsAt(good, 1, 1));
  // Not in, because refused (seen by each agent's control channel, twice: it retries), not because it was slow.
  await impostor.log.waitFor('tls-1 refused with PERMISSION_DENIED', (r) => r.code === status.PERMISSION_DENIED && /agent id "tls-1" does not match its client certificate \(CN=mx-agent\)/.test(String(r.reason)), 2);
  await certless.log.waitFor('tls-2 refused in the TLS handshake', (r) => r.code === status.UNAVAILABLE && /alert certificate required/.test(String(r.reason)), 2);
  assert.deepEqual((await good.status()).agents.map((a) => a.id), ['mx-agent'], 'an agent without a client certificate, or with another agent\'s, got in');
  assert.equal(impostor.agent.appliedVersion, 0, 'the impostor received a table');
  assert.equal(agent.agent.appliedVersion, 1);
});

test('watch streams routes, agents and operations; metrics and healthz report the fleet', async (t) => {
  const defer = deferrer(t);
  const ctl = await startController({ http: { listen: '127.0.0.1:0' } });
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  const events: WatchResponse[] = [];
  const watch = api.watch();
  watch.on('data', (e: WatchResponse) => events.push(e));
  watch.on('error', () => undefined);
  defer(() => watch.cancel());
  await waitFor('initial snapshot', () => events.some((e) => e.event?.$case === 'routesChanged'));
  await api.setRoute('example.com', 'smtp:[127.0.0.1]:2');
  const a = await startFleetAgent(ctl.address, 'w1');
  defer(() => a.cleanup());
  await waitFor('w1 at version 1', () => agentsAt(api, 1, 1));
  await api.hold('example.com');
  await waitFor('events', () =>
    events.some((e) => e.event?.$case === 'routesChanged' && e.event.value.version === 2) &&
    events.some((e) => e.event?.$case === 'agent' && e.event.value.id === 'w1' && e.event.value.appliedVersion === 2) &&
    events.some((e) => e.event?.$case === 'operation' && e.event.value.kind === 'hold' && e.event.value.state === 'done'),
  );
  await waitFor('health in status', async () => (await api.status()).agents[0]?.health !== undefined);

  const metrics = await (await fetch(`http://127.0.0.1:${ctl.controller.httpPort}/metrics`)).text();
  assert.match(metrics, /mxswitch_controller_agents\{state="connected",expected="true"\} 1/);
  assert.match(metrics, /mxswitch_controller_agent_applied_version\{agent="w1"\} 2/);
  assert.match(metrics, /mxswitch_controller_route_table_version 2/);
  assert.match(metrics, /mxswitch_controller_fleet_queue_recipients 0/);
  assert.match(metrics, /mxswitch_controller_operations\{state="done"\} 1/);
  const health = await fetch(`http://127.0.0.1:${ctl.controller.httpPort}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(((await health.json()) as { detail: unknown }).detail, { version: 2, agents: 1, connected: 1 });
});

test('a second session for the same agent id replaces the first; a silent session is closed after sessionTimeout', async (t) => {
  const defer = deferrer(t);
  const ctl = await startController({ grpc: { sessionTimeout: '600ms', heartbeatInterval: '100ms' } });
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', 'smtp:[127.0.0.1]:2');
  const first = await startFleetAgent(ctl.address, 'dup');
  defer(() => first.cleanup());
  await waitFor('first at version 1', () => agentsAt(api, 1, 1));
  const bootA = (await api.status()).agents[0]!.bootId;
  const second = await startFleetAgent(ctl.address, 'dup');
  defer(() => second.cleanup());
  await waitFor('second session registered', async () => (await api.status()).agents[0]!.bootId === second.agent.bootId);
  assert.notEqual(bootA, second.agent.bootId);
  assert.equal((await api.status()).agents.length, 1);
  await second.cleanup();
  await first.cleanup();
  await waitFor('disconnected', async () => (await api.status()).agents[0]!.state === 'disconnected');

  // A peer that says Hello and then nothing (no heartbeat, no health) is cut off after sessionTimeout.
  const raw = new AgentServiceClient(ctl.address, credentials.createInsecure());
  defer(() => raw.close());
  const md = new Metadata();
  md.set('authorization', `Bearer ${ctl.config.tokens.agent}`);
  const s = raw.session(md);
  s.on('data', () => undefined);
  const ended = within('the mute session cut off', new Promise<ServiceError>((resolve) => s.on('error', resolve)), 60_000);
  s.write(SessionRequest.fromPartial({ body: { $case: 'hello', value: { agentId: 'mute', bootId: 'b' } } }));
  const err = await ended;
  assert.equal(err.code, status.UNAVAILABLE);
  assert.match(err.details, /no message from the agent/);
  const mute = (await api.status()).agents.find((a) => a.id === 'mute')!;
  assert.equal(mute.state, 'disconnected');
  assert.match(mute.lastError, /no message from the agent/);
});

test('an oversized or malformed admin request is refused with a status; the controller keeps serving', async (t) => {
  const defer = deferrer(t);
  const ctl = await startController();
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await assert.rejects(api.setRoute('x'.repeat(20 * 1024 * 1024), 'smtp:[127.0.0.1]:25'), isStatus(status.RESOURCE_EXHAUSTED));
  await assert.rejects(api.setRoute('not a domain!', 'smtp:[127.0.0.1]:25'), isStatus(status.INVALID_ARGUMENT, /not an address, a domain/));
  // Raw bytes that are not a protobuf SetRouteRequest.
  const garbage = await new Promise<ServiceError | null>((resolve) =>
    api.client.makeUnaryRequest('/mxswitch.v1.AdminService/SetRoute', (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x01]), (() => { const m = new Metadata(); m.set('authorization', `Bearer ${ctl.config.tokens.admin}`); return m; })(), (err) => resolve(err)),
  );
  assert.ok(garbage && garbage.code !== status.OK, 'garbage request was accepted');
  assert.equal((await api.listRoutes()).version, 0, 'controller stopped serving or stored something');
});
