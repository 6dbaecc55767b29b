import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { test } from 'node:test';
import { credentials, Metadata, status, type ChannelCredentials } from '@grpc/grpc-js';
import { ShadowServiceClient, type ReplicateResponse } from '../../proto/gen/mxswitch/v1/shadow.js';
import { ShadowPeerError } from '../../agent/shadow/assignment.js';
import { ShadowLink } from '../../agent/shadow/link.js';
import { ShadowTransport } from '../../agent/shadow/tls.js';
import { silentLogger } from '../../shared/logger.js';
import { tempDir } from '../helpers/agent.js';
import { agentCertificates, makePki } from '../helpers/certs.js';
import { send, shadowFleet, standInPeer, type FleetAgent } from './helpers.js';

test('shadow.tls: the peer port takes only clients whose certificate names the paired agent, beside its credential', async (t) => {
  const dir = tempDir('mxs-shadow-tls-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makePki(dir);
  const certs = agentCertificates(pki, ['tl-a', 'tl-b', 'tl-x']);
  const { ctl, agents } = await shadowFleet(t, { ids: ['tl-a', 'tl-b'], shadowExtra: (id) => ({ tls: { ...certs.get(id)!, ca: pki.ca } }) });
  const [a, b] = agents as [FleetAgent, FleetAgent];
  // The pair works over mutual TLS: the copy is at the peer before the 250.
  assert.equal(await send(a.port, 1), 250);
  assert.equal(b.agent.queue.shadowViews.copyCount(), 1);

  // tl-a's credential is not enough: a client must also hold a certificate that names tl-a.
  const credential = ctl.controller.shadow!.assignmentFor('tl-a')!.peer!.credential;
  const attempt = (creds: ChannelCredentials) =>
    new Promise<number>((resolve) => {
      const client = new ShadowServiceClient(b.agent.shadowAddress, creds);
      const md = new Metadata();
      md.set('authorization', `Bearer ${credential}`);
      md.set('x-mxswitch-agent', 'tl-a');
      const call = client.replicate(md, { deadline: Date.now() + 10_000 });
      const done = (code: number) => {
        call.cancel();
        client.close();
        resolve(code);
      };
      call.on('data', (_r: ReplicateResponse) => done(status.OK));
      call.on('error', (err: { code: number }) => done(err.code));
      call.write({ batchId: 1, copies: [{ id: 'X1', sender: '', recipients: ['u@example.com'], body: Buffer.from('x'), arrivedAtMs: Date.now(), dsn: false, holds: [], transfer: 0, parts: 0, size: 0 }], discards: [], holds: [], parts: [] });
    });
  const tlsAs = (id: string) => credentials.createSsl(readFileSync(pki.ca), readFileSync(certs.get(id)!.key), readFileSync(certs.get(id)!.cert), { checkServerIdentity: () => undefined });
  assert.equal(await attempt(tlsAs('tl-x')), status.UNAUTHENTICATED, "another agent's certificate with tl-a's credential");
  assert.equal(await attempt(credentials.createInsecure()), status.UNAVAILABLE, 'plaintext');
  assert.equal(await attempt(tlsAs('tl-a')), status.OK, "tl-a's own certificate and credential");
  assert.equal(b.agent.queue.shadowViews.copyCount(), 2, 'only the last one stored a copy');
});

test('shadow.tls: a client copies only to a peer whose certificate names the agent it was assigned, whatever its address', async (t) => {
  const dir = tempDir('mxs-shadow-tls-client-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makePki(dir);
  const certs = agentCertificates(pki, ['tl-a', 'tl-b', 'tl-x']);
  // tl-a's side of its pair with tl-b, as its Shadowing makes it.
  const transport = new ShadowTransport({ ...certs.get('tl-a')!, ca: pki.ca });
  const copyTo = async (address: string) => {
    const link = new ShadowLink({ agentId: 'tl-b', address, credential: 'pair-secret' }, 'tl-a', transport, silentLogger);
    try {
      await link.copy({ id: 'C1', sender: 's@sender.test', recipients: ['u@example.com'], body: Buffer.from('x'), arrivedAtMs: Date.now(), dsn: false, holds: [], transfer: 0, parts: 0, size: 0 });
      return 'copied';
    } catch (err) {
      assert.ok(err instanceof ShadowPeerError, String(err));
      return `refused: ${err.message}`;
    } finally {
      link.close();
    }
  };
  // Same CA, same address form (127.0.0.1, which every test certificate names): only the agent named differs.
  const impostor = await standInPeer({ ca: pki.ca, ...certs.get('tl-x')! });
  t.after(() => impostor.stop());
  const peer = await standInPeer({ ca: pki.ca, ...certs.get('tl-b')! });
  t.after(() => peer.stop());

  const refused = await copyTo(impostor.address);
  t.diagnostic(`to a peer presenting tl-x's certificate: ${refused}`);
  assert.match(refused, /^refused: .*does not name tl-b/);
  assert.equal(impostor.calls(), 0, 'no call reached a peer that is not tl-b');
  assert.equal(await copyTo(peer.address), 'copied', "tl-b's own certificate");
  assert.equal(peer.calls(), 1);
  assert.deepEqual(peer.batches.map((b) => b.copies.map((c) => c.id)), [['C1']]);
});
