// The routing table on a NATS-mode controller, one key per route (shared/route-keys.ts): a table of 20,000 routes
// (one value of ~1.3 MB in the old layout, over NATS's default 1 MB max_payload) is imported in one version through
// the real CLI, reaches the agent whole, a one-route change rewrites one key, and a half-written version is never
// applied (a held route stays held until a whole version says otherwise).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect } from '@nats-io/transport-node';
import { bucketNames, encodeJson, kvManager } from '../../shared/nats.js';
import { encodeRouteKey, routeKey, VERSION_KEY } from '../../shared/route-keys.js';
import { tempDir, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, adminApi, last } from '../helpers/controller.js';
import { NatsServer } from '../helpers/nats-server.js';
import { runCli } from '../helpers/process.js';
import { natsTransport } from '../helpers/transport.js';

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(() => server.stop());

const T = (n: number) => `smtp:[192.0.2.${n}]:25`;

test('nats: 20,000 routes imported in one version reach the agent; one change rewrites one key; a half-written version is never applied', { timeout: 240_000 }, async (t) => {
  const transport = natsTransport(server);
  const ctl = await transport.startController();
  t.after(() => ctl.cleanup());
  const agent = await transport.startAgent(ctl, 'n1');
  t.after(() => agent.cleanup());
  const api = adminApi(ctl.address);
  t.after(() => api.close());
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const kv = await kvManager(nc, 10_000).open(bucketNames(ctl.config.nats!.fleet).routes);
  const values = async () => {
    const out = new Map<string, { revision: number; bytes: number }>();
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    for (let i = 0; i < keys.length; i += 500) {
      const entries = await Promise.all(keys.slice(i, i + 500).map((k) => kv.get(k)));
      for (const e of entries) if (e && e.operation === 'PUT') out.set(e.key, { revision: e.revision, bytes: e.value.length });
    }
    return out;
  };

  await api.setRoute('held.example', T(1));
  assert.equal(last(await api.hold('held.example')).operation?.state, 'done');
  const dir = tempDir('mxs-nats-import-');
  const file = join(dir, 'big.map');
  writeFileSync(file, `${Array.from({ length: 20_000 }, (_, i) => `mailbox.number.${i}@big.example  ${T(2 + (i % 50))}`).join('\n')}\n`);
  const imported = await runCli(['route', 'import', file, '--wait'], { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN }, 180_000);
  assert.equal(imported.code, 0, imported.stderr);
  assert.match(imported.stdout, /20000 routes imported: 20000 added, 0 changed, 0 removed, 0 unchanged: table version 3, applied by n1\n$/);
  const first = await values();
  assert.equal(first.size, 20_002, 'a key per route and the version key');
  const biggest = Math.max(...[...first.values()].map((v) => v.bytes));
  assert.ok(biggest < 1024, `largest value ${biggest} bytes`);
  assert.equal(agent.agent.router.table.version, 3);
  assert.equal(agent.agent.router.table.routes.length, 20_001);
  assert.equal(agent.agent.router.table.lookup('mailbox.number.19999@big.example')?.target, T(2 + (19_999 % 50)));
  assert.equal(ctl.controller.store.snapshot().routes.length, 20_001);

  // One change at that size: the route's key and the version key are rewritten, nothing else; it reaches the agent.
  assert.equal((await api.setRoute('mailbox.number.7@big.example', T(99))).version, 4);
  assert.equal((await api.removeRoute('mailbox.number.8@big.example')).version, 5);
  const second = await values();
  const rewritten = [...second].filter(([key, v]) => first.get(key)?.revision !== v.revision).map(([key]) => key).sort();
  assert.deepEqual(rewritten, [routeKey('mailbox.number.7@big.example'), routeKey('mailbox.number.8@big.example'), VERSION_KEY].sort());
  await waitFor('the agent applied version 5', () => agent.agent.router.table.version === 5, 30_000);
  assert.equal(agent.agent.router.table.lookup('mailbox.number.7@big.example')?.target, T(99));
  assert.equal(agent.agent.router.table.get('mailbox.number.8@big.example'), undefined);
  assert.equal(agent.agent.router.table.routes.length, 20_000);
  await waitFor('n1 acked version 5', async () => (await api.status()).agents.find((a) => a.id === 'n1')?.appliedVersion === 5);

  // A writer that claimed version 6, released the held route and re-pointed a mailbox, then died: the agent keeps
  // version 5 (the route stays held), and the next write takes over and puts both keys back as version 5 had them.
  const claim = encodeJson({ version: 6, state: 'writing', complete: 5, actor: 'crashed', at: Date.now() - 60_000 });
  await kv.put(VERSION_KEY, claim);
  await kv.put(routeKey('held.example'), encodeRouteKey({ v: 6, route: { match: 'held.example', target: T(3) } }));
  await kv.put(routeKey('mailbox.number.9@big.example'), encodeRouteKey({ v: 6, route: { match: 'mailbox.number.9@big.example', target: T(98) } }));
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(agent.agent.router.table.version, 5, 'not applied while the version is being written');
  assert.deepEqual(agent.agent.router.table.get('held.example'), { match: 'held.example', target: T(1), hold: true });
  assert.equal(ctl.controller.store.version, 5);
  assert.equal((await api.setRoute('newcomer@big.example', T(4))).version, 7);
  await waitFor('the agent applied version 7', () => agent.agent.router.table.version === 7, 30_000);
  assert.deepEqual(agent.agent.router.table.get('held.example'), { match: 'held.example', target: T(1), hold: true });
  assert.equal(agent.agent.router.table.lookup('mailbox.number.9@big.example')?.target, T(2 + 9));
  assert.equal(agent.agent.router.table.lookup('newcomer@big.example')?.target, T(4));
  assert.deepEqual(ctl.controller.store.get('held.example'), { match: 'held.example', target: T(1), hold: true });

  // A restarted agent (a fresh watch: a snapshot of the bucket) has the same table.
  await agent.cleanup(true);
  const again = await transport.startAgent(ctl, 'n1', { dataDir: agent.config.dataDir });
  t.after(() => again.cleanup());
  await api.setRoute('late@big.example', T(5));
  await waitFor('the restarted agent at version 8', () => again.agent.router.table.version === 8, 30_000);
  const sorted = (rs: readonly { match: string; target: string; hold?: boolean }[]) => rs.map((r) => `${r.match} ${r.target} ${r.hold ?? false}`).sort();
  assert.deepEqual(sorted(again.agent.router.table.routes), sorted(ctl.controller.store.snapshot().routes));
});

test('nats: a bucket from before the key-per-route layout (the whole table under "table") is moved to keys in one version above it', { timeout: 60_000 }, async (t) => {
  const fleet = `legacy${process.pid}`;
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const kv = await kvManager(nc).create(bucketNames(fleet).routes, { history: 10 });
  const old = { version: 41, routes: [{ match: 'example.com', target: T(1) }, { match: 'held.example', target: T(2), hold: true }] };
  await kv.put('table', encodeJson(old));
  const transport = natsTransport(server);
  const ctl = await transport.startController({ fleet });
  t.after(() => ctl.cleanup());
  assert.equal(ctl.controller.store.version, 42);
  assert.deepEqual(ctl.controller.store.snapshot().routes, old.routes);
  assert.equal(await kv.get('table').then((e) => e?.operation), 'DEL');
  const agent = await transport.startAgent(ctl, 'n1');
  t.after(() => agent.cleanup());
  await waitFor('the agent on version 42', () => agent.agent.router.table.version === 42, 30_000);
  assert.deepEqual(agent.agent.router.table.get('held.example'), { match: 'held.example', target: T(2), hold: true });
});
