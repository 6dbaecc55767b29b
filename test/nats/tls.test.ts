import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { tempDir, waitFor } from '../helpers/agent.js';
import { makePki, type TestPki } from '../helpers/certs.js';
import { adminApi, agentsAt, deferrer, startController } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { freePort } from '../helpers/process.js';
import { startNatsAgent } from '../helpers/transport.js';

let server: NatsServer;
let pki: TestPki;
let monitorPort: number;
before(async () => {
  pki = makePki(tempDir('mxs-natspki-'));
  monitorPort = await freePort();
  // TLS required, and client certificates signed by our CA (verify). The monitoring port lists closed
  // connections with the server's reason: how the test sees a refusal (the client only retries, silently).
  server = await NatsServer.start({
    config: `http: "127.0.0.1:${monitorPort}"\ntls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.ca}", verify: true, timeout: 2 }`,
  });
});

/** Client connections the server closed because their TLS handshake failed (nats-server /connz). */
async function tlsRefusals(): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${monitorPort}/connz?state=closed&limit=1024`);
  const body = (await res.json()) as { connections?: { reason?: string }[] };
  return (body.connections ?? []).filter((c) => c.reason === 'TLS Handshake Failure').length;
}
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
  defer(() => good.cleanup());
  await waitFor('tls-1 at version 1', () => agentsAt(api, 1, 1));
  // Out because refused: the server closed its connections in the TLS handshake (twice: it retries). The
  // controller and tls-1 present our CA's certificate, so these refusals are tls-2's.
  assert.equal(await tlsRefusals(), 0, 'nothing refused before tls-2 started');
  const stranger = await startNatsAgent(server, 'tls', 'tls-2', {}, { tls: { ca: pki.ca, cert: pki.strangerCert, key: pki.strangerKey } });
  defer(() => stranger.cleanup());
  await waitFor('tls-2 refused twice in the TLS handshake', async () => (await tlsRefusals()) >= 2, 30_000);
  assert.deepEqual((await api.status()).agents.map((a) => a.id), ['tls-1'], 'the agent with a foreign certificate never got in');
  assert.equal(stranger.agent.health().controllerConnected, false);
});
