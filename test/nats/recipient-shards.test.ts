// Recipient lists on a NATS-mode controller: the bucket layout holds at sizes one value could not, a small edit
// rewrites one shard, and an agent applies a version only when its writer marked it done.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { jetstream } from '@nats-io/jetstream';
import { waitFor } from '../helpers/agent.js';
import { NatsServer } from '../helpers/nats-server.js';
import { adminApi } from '../helpers/controller.js';
import { natsTransport } from '../helpers/transport.js';
import { encodeJson } from '../../shared/nats.js';
import { encodeShard, shardKey, shardOf, VERSION_KEY } from '../../shared/recipient-shards.js';

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(() => server.stop());

test('nats: 100,000 listed addresses fit (no value near max_payload), reach the agent, a one-address edit rewrites one shard, and a half-written version is never applied', { timeout: 180_000 }, async (t) => {
  const transport = natsTransport(server);
  const ctl = await transport.startController();
  t.after(() => ctl.cleanup());
  const agent = await transport.startAgent(ctl, 'n1');
  t.after(() => agent.cleanup());
  const fleetName = ctl.config.nats!.fleet;
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const kv = await new Kvm(jetstream(nc)).open(`${fleetName}-recipients`);
  const revisions = async () => {
    const out = new Map<string, { revision: number; bytes: number }>();
    for await (const key of await kv.keys()) {
      const e = await kv.get(key);
      if (e && e.operation === 'PUT') out.set(key, { revision: e.revision, bytes: e.value.length });
    }
    return out;
  };

  // 100,000 addresses: as one value that is ~2.5 MB, above NATS's default 1 MB max_payload.
  const addresses = Array.from({ length: 100_000 }, (_, i) => `mailbox.number.${i}@big.example`);
  const changed = await ctl.controller.recipients!.import('big.example', addresses, { replace: false, actor: 'test' });
  assert.deepEqual(changed, { version: 1, added: 100_000, removed: 0 });
  const first = await revisions();
  const biggest = Math.max(...[...first.values()].map((v) => v.bytes));
  assert.ok(first.size <= 257, `${first.size} keys: 256 shards at most and the version`);
  assert.ok(biggest < 64 * 1024, `largest value ${biggest} bytes`);
  await waitFor('the agent applied list version 1', () => agent.agent.recipients.version === 1, 60_000);
  assert.deepEqual(agent.agent.recipients.counts(), [{ domain: 'big.example', count: 100_000 }]);
  await waitFor('the agent acked list version 1 in its state', async () => (await adminApi(ctl.address).status()).agents.find((a) => a.id === 'n1')?.recipientsVersion === 1);

  // One more address: one shard and the version key are rewritten, nothing else.
  await ctl.controller.recipients!.edit({ add: ['newcomer@big.example'], remove: [], dropDomains: [], actor: 'test' });
  const second = await revisions();
  const rewritten = [...second].filter(([key, v]) => first.get(key)?.revision !== v.revision).map(([key]) => key).sort();
  assert.deepEqual(rewritten, [shardKey('big.example', shardOf('newcomer@big.example')), VERSION_KEY].sort());
  await waitFor('the agent applied list version 2', () => agent.agent.recipients.version === 2);
  assert.equal(agent.agent.recipients.accepts('big.example', 'newcomer@big.example'), true);

  // A writer that claimed version 3 and wrote a shard but did not finish (crashed): the agent keeps version 2.
  const key = shardKey('big.example', shardOf('halfway@big.example'));
  const shard = new TextDecoder().decode((await kv.get(key))!.value).split('\n');
  const versionValue = (state: string) => encodeJson({ version: 3, state, domains: ['big.example'], actor: 'test', at: Date.now() });
  await kv.put(VERSION_KEY, versionValue('writing'));
  await kv.put(key, encodeShard([...shard, 'halfway@big.example']));
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(agent.agent.recipients.version, 2, 'not applied while the version is being written');
  assert.equal(agent.agent.recipients.accepts('big.example', 'halfway@big.example'), false);
  await kv.put(VERSION_KEY, versionValue('done'));
  await waitFor('the agent applied list version 3 once it was done', () => agent.agent.recipients.version === 3);
  assert.equal(agent.agent.recipients.accepts('big.example', 'halfway@big.example'), true);
  assert.equal(agent.agent.recipients.counts()[0]!.count, 100_002);

  // The controller's own cache followed the outside write; the next edit continues above it.
  await waitFor('the controller at list version 3', () => ctl.controller.recipients!.version === 3);
  assert.equal((await ctl.controller.recipients!.edit({ add: [], remove: ['halfway@big.example'], dropDomains: [], actor: 'test' })).version, 4);
  await waitFor('the agent applied list version 4', () => agent.agent.recipients.version === 4);
  assert.equal(agent.agent.recipients.accepts('big.example', 'halfway@big.example'), false);
});
