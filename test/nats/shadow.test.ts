import { after, before } from 'node:test';
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
