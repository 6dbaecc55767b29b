import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect } from '@nats-io/transport-node';
import { NatsShadowStore } from '../../control/adapters/nats/shadow.js';
import { createLogger } from '../../shared/logger.js';
import { kvManager } from '../../shared/nats.js';
import { NatsServer } from '../helpers/nats-server.js';
import { natsTransport } from '../helpers/transport.js';
import { shadowIngestScenarios, shadowLossScenarios } from '../shadow/scenarios.js';

// Shadow redundancy with the control plane on NATS: announcements and reports in the agents bucket, assignments
// (peers, credentials, takeovers) in the shadow bucket; the gRPC scenarios unchanged.
let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(() => server.stop());

shadowIngestScenarios(() => natsTransport(server), ' [nats]');
shadowLossScenarios(() => natsTransport(server), ' [nats]');

test('controller replicas starting together share one shadow plan (one secret: the same pair credentials)', async (t) => {
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const kv = await kvManager(nc).create(`t${process.pid}-plan-ops`, { history: 1 });
  const log = createLogger('test', { level: 'silent' });
  const stores = await Promise.all(Array.from({ length: 4 }, () => NatsShadowStore.open(kv, log)));
  const secrets = new Set(stores.map((s) => s.load()!.secret));
  assert.equal(secrets.size, 1);
});
