import assert from 'node:assert/strict';
import { test } from 'node:test';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import { ShadowServiceClient, type ReplicateResponse } from '../../proto/gen/mxswitch/v1/shadow.js';
import { grpcTransport } from '../helpers/transport.js';
import { shadowFleet } from './helpers.js';
import { shadowIngestScenarios } from './scenarios.js';

shadowIngestScenarios(() => grpcTransport);

test('the shadow service refuses a client without the pair\'s credential', async (t) => {
  const { agents } = await shadowFleet(t, { ids: ['sh-a', 'sh-b'] });
  const b = agents[1]!;
  const client = new ShadowServiceClient(b.agent.shadowAddress, credentials.createInsecure());
  t.after(() => client.close());
  const attempt = (md: Metadata) =>
    new Promise<number>((resolve) => {
      const call = client.replicate(md);
      call.on('data', (_r: ReplicateResponse) => resolve(status.OK));
      call.on('error', (err: { code: number }) => resolve(err.code));
      call.write({ batchId: 1, copies: [{ id: 'X1', sender: '', recipients: ['u@example.com'], body: Buffer.from('x'), arrivedAtMs: Date.now(), dsn: false, holds: [], transfer: 0, parts: 0, size: 0 }], discards: [], holds: [], parts: [] });
    });
  assert.equal(await attempt(new Metadata()), status.UNAUTHENTICATED, 'anonymous');
  const forged = new Metadata();
  forged.set('authorization', 'Bearer 00');
  forged.set('x-mxswitch-agent', 'sh-a');
  assert.equal(await attempt(forged), status.UNAUTHENTICATED, 'a paired id with a wrong credential');
  assert.equal(b.agent.queue.shadowViews.copyCount(), 0);
});
