import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { tempDir, waitFor } from '../helpers/agent.js';
import { makePki, type TestPki } from '../helpers/certs.js';
import { adminApi, agentsAt, deferrer, startController } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { startNatsAgent } from '../helpers/transport.js';

let server: NatsServer;
let pki: TestPki;
before(async () => {
  pki = makePki(tempDir('mxs-natspki-'));
  // TLS required, and client certificates signed by our CA (verify).
  server = await NatsServer.start({ config: `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.ca}", verify: true, timeout: 2 }` });
});
after(async () => {
  await server.stop();
  rmSync(pki.dir, { recursive: true, force: true });
});

test('NATS over TLS with client certificates: controller and agent connect; a certificate from another CA does not', async (t) => {
  const defer = deferrer(t);
  const tls = { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey };
  const ctl = await startController({ nats: { servers: [server.url], fleet: 'tls', tls } }, { minStaleMs: 1000 });
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', 'smtp:[127.0.0.1]:2');
  const good = await startNatsAgent(server, 'tls', 'tls-1', {}, { tls });
  const stranger = await startNatsAgent(server, 'tls', 'tls-2', {}, { tls: { ca: pki.ca, cert: pki.strangerCert, key: pki.strangerKey } });
  defer(() => Promise.all([good.cleanup(), stranger.cleanup()]));
  await waitFor('tls-1 at version 1', () => agentsAt(api, 1, 1));
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual((await api.status()).agents.map((a) => a.id), ['tls-1'], 'the agent with a foreign certificate never got in');
  assert.equal(stranger.agent.health().controllerConnected, false);
});
