import { after, before } from 'node:test';
import { NatsServer } from '../helpers/nats-server.js';
import { natsTransport } from '../helpers/transport.js';
import { fleetScenarios } from '../control/fleet-scenarios.js';

// The gRPC fleet behaviours, unchanged, with the agents on NATS (one nats-server for the file, a fleet per test).
let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(() => server.stop());

fleetScenarios(() => natsTransport(server), ' [nats]');
