// The CLI as a child process against a real in-process controller with real agents (gRPC sessions on loopback).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { makePki } from '../helpers/certs.js';
import { ADMIN_TOKEN, agentsAt, startController } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { grpcTransport } from '../helpers/transport.js';
import { ndjson, runCli } from './run-cli.js';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const OLD = 'smtp:[127.0.0.1]:2';
const NEW = 'smtp:[127.0.0.1]:3';

async function setup(t: TestContext, agentIds: string[] = []) {
  const { ctl, api, agents } = await fleet(t, grpcTransport, { agents: agentIds });
  const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });
  return { ctl, api, agents, cli };
}

test('route set / ls / rm through the CLI: --json shapes, compare-and-set, --wait for the agents', async (t) => {
  const { ctl, api, agents, cli } = await setup(t, ['e1', 'e2']);
  const empty = await cli('route', 'ls');
  assert.equal(
    empty.stdout,
    'route table version 0\nno table set on the controller yet: the agents relay with the bootstrap routes of their config files\n' +
      'e1 (table version 0):\n  no routes: every recipient is refused (550 5.7.1)\ne2 (table version 0):\n  no routes: every recipient is refused (550 5.7.1)\n',
  );

  const set = await cli('route', 'set', 'Example.com', 'smtp:[127.0.0.1]:2', '--json', '--wait', '--timeout', '10s');
  assert.equal(set.code, 0, set.stderr);
  assert.deepEqual(JSON.parse(set.stdout), { match: 'example.com', target: OLD, hold: false, tls: 'may', verify: 'none', version: 1, appliedBy: ['e1', 'e2'] });
  for (const a of agents) assert.equal(a.agent.router.table.get('example.com')?.target, OLD);

  const tls = await cli('route', 'set', '.example.org', 'smtp:mx.example.net', '--tls', 'required', '--expect-version', '1');
  assert.equal(tls.code, 0, tls.stderr);
  assert.match(tls.stdout, /^route \.example\.org -> smtp:mx\.example\.net:25 \(TLS required\) set: table version 2/);

  const stale = await cli('route', 'set', 'example.com', NEW, '--expect-version', '1');
  assert.equal(stale.code, 1, 'a stale --expect-version is refused');
  assert.match(stale.stderr.trim(), /^mxswitch: .*version 2, not 1/);
  assert.equal(stale.stderr.trim().split('\n').length, 1);

  const ls = await cli('route', 'ls', '--json');
  assert.equal(ls.code, 0, ls.stderr);
  const lsDoc = JSON.parse(ls.stdout) as { version: number; routes: { match: string }[] };
  assert.equal(lsDoc.version, 2);
  assert.deepEqual(
    lsDoc.routes.sort((a, b) => a.match.localeCompare(b.match)),
    [
      { match: '.example.org', target: 'smtp:mx.example.net:25', hold: false, tls: 'required', verify: 'none' },
      { match: 'example.com', target: OLD, hold: false, tls: 'may', verify: 'none' },
    ],
  );
  const human = await cli('route', 'ls');
  assert.match(human.stdout, /route table version 2/);
  assert.match(human.stdout, /example\.com\s+smtp:\[127\.0\.0\.1\]:2\s+-\s+may/);

  const rm = await cli('route', 'rm', '.example.org', '--json', '--wait');
  assert.equal(rm.code, 0, rm.stderr);
  assert.deepEqual(JSON.parse(rm.stdout), { match: '.example.org', removed: true, version: 3, appliedBy: ['e1', 'e2'] });
  const missing = await cli('route', 'rm', '.example.org');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /\.example\.org/);
  assert.equal(ctl.controller.store.version, 3);

  const status = await cli('status', '--json');
  assert.equal(status.code, 0, status.stderr);
  const doc = JSON.parse(status.stdout) as { version: number; converged: boolean; agents: { id: string; state: string; appliedVersion: number }[] };
  assert.equal(doc.converged, true);
  assert.deepEqual(
    doc.agents.map((a) => [a.id, a.state, a.appliedVersion]),
    [
      ['e1', 'connected', 3],
      ['e2', 'connected', 3],
    ],
  );
  assert.equal((await api.status()).version, 3);

  const badToken = await runCli(['route', 'ls'], { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: 'wrong-token-123' });
  assert.equal(badToken.code, 1);
  assert.equal(badToken.stderr.trim(), 'mxswitch: controller refused the token (set MXSWITCH_TOKEN or --token-file)');
});

test('hold, switchover --wait-drained, release, flush through the CLI; status and queue ls', async (t) => {
  const { api, agents, cli } = await setup(t, ['s1', 's2']);
  await api.setRoute('example.com', OLD);
  await waitFor('both at version 1', () => agentsAt(api, 1, 2));

  const hold = await cli('hold', 'example.com', '--timeout', '10s');
  assert.equal(hold.code, 0, hold.stderr);
  assert.match(hold.stdout, /hold example\.com: done, verified on 2 agent\(s\): s1, s2/);
  for (const a of agents) assert.equal(a.agent.router.table.get('example.com')?.hold, true);

  const sw = await cli('switchover', 'example.com', '--to', NEW, '--wait-drained', '--timeout', '10s', '--json');
  assert.equal(sw.code, 0, sw.stderr);
  const docs = ndjson(sw.stdout);
  const result = docs.at(-1) as { type: string; ok: boolean; operation: { kind: string; state: string; target: string } };
  assert.equal(result.type, 'result');
  assert.equal(result.ok, true);
  assert.equal(result.operation.state, 'done');
  assert.equal(result.operation.target, NEW);
  assert.ok(docs.slice(0, -1).every((d) => d.type === 'progress'));
  for (const a of agents) {
    const r = a.agent.router.table.get('example.com');
    assert.equal(r?.target, NEW);
    assert.equal(r?.hold, undefined);
  }

  const flush = await cli('flush', 'example.com');
  assert.equal(flush.code, 0, flush.stderr);
  const release = await cli('release', 'example.com');
  assert.equal(release.code, 0, release.stderr);

  const q = await cli('queue', 'ls', '--json');
  assert.equal(q.code, 0, q.stderr);
  assert.deepEqual(JSON.parse(q.stdout), {
    results: [
      { agent: 's1', ok: true, result: { entries: [], more: 0 } },
      { agent: 's2', ok: true, result: { entries: [], more: 0 } },
    ],
  });
  const ops = await cli('operation', 'ls', '--json');
  assert.equal(ops.code, 0, ops.stderr);
  const listed = (JSON.parse(ops.stdout) as { operations: { kind: string; match: string; state: string }[] }).operations;
  assert.deepEqual(listed.map((o) => `${o.kind} ${o.state}`), ['release done', 'flush done', 'switchover done', 'hold done'], 'newest first');
  assert.match((await cli('operation', 'ls')).stdout, /^\S+\s+release example\.com\s+done, finished /);

  const status = await cli('status');
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /s1\s+test\s+connected\s+v\d+/);
  assert.match(status.stdout, /recent operations:\n.*release example\.com\s+done/);
});

test('queue show / rm ID without --agent find the message on whichever agent holds it; an id on no agent is exit 1 naming the agents asked', async (t) => {
  const { api, agents, cli } = await setup(t, ['q1', 'q2']);
  // Nothing listens on port 9: the message stays queued (deferred) on the agent that took it.
  await api.setRoute('example.com', 'smtp:[127.0.0.1]:9');
  await waitFor('both at version 1', () => agentsAt(api, 1, 2));
  await smtpClient(agents[1]!.port).sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(1, 'u@example.com') });
  const id = agents[1]!.agent.queue.allRecipients()[0]!.msgId;

  const listed = await cli('queue', 'ls');
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^== q1\nqueue is empty\n-- 0 KB in 0 messages, 0 recipients\n== q2\nID .*\n.*u@example\.com.*\n-- 1 KB in 1 message, 1 recipient\n== every agent that answered\n-- 1 KB in 1 message, 1 recipient\n$/);

  const shown = await cli('queue', 'show', id, '--json');
  assert.equal(shown.code, 0, shown.stderr);
  const results = (JSON.parse(shown.stdout) as { results: { agent: string; ok: boolean; result: { id: string } }[] }).results;
  assert.deepEqual(results.map((r) => [r.agent, r.ok, r.result.id]), [['q2', true, id]], 'only the agent that holds it answers');

  const body = await cli('queue', 'show', id, '--body');
  assert.equal(body.code, 0, body.stderr);
  // The message as stored (and as it will be sent): our Received header, then what the client sent, byte for byte.
  assert.match(body.stdout, /\n\nReceived: from \[127\.0\.0\.1\] /);
  assert.ok(body.stdout.endsWith(`${testMessage(1, 'u@example.com').toString('latin1')}\n`), body.stdout);

  const missing = await cli('queue', 'rm', 'NOSUCHID');
  assert.equal(missing.code, 1);
  assert.equal(missing.stderr, 'mxswitch: queue rm: no message NOSUCHID on any agent (asked q1, q2)\n');

  const removed = await cli('queue', 'rm', id);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(removed.stdout, 'q2: 1 recipient of 1 message removed\n');
  assert.equal(agents[1]!.agent.queue.inspect.counts().recipients, 0);
});

test('route set and switchover refuse a target that is an agent\'s own SMTP listener; status shows what each agent runs', async (t) => {
  const { agents, cli } = await setup(t, ['l1', 'l2']);
  const port = agents[1]!.port;
  for (const target of [`smtp:[127.0.0.1]:${port}`, `smtp:localhost:${port}`]) {
    const r = await cli('route', 'set', 'example.com', target);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `mxswitch: target "${target}" is agent l2's own SMTP listener (127.0.0.1:${port}): mail would loop through the fleet; route to the mail server\n`);
  }
  assert.equal((await cli('route', 'set', 'example.com', 'smtp:[127.0.0.1]:9')).code, 0);
  const sw = await cli('switchover', 'example.com', '--to', `smtp:[127.0.0.1]:${agents[0]!.port}`);
  assert.equal(sw.code, 2);
  assert.match(sw.stderr, /is agent l1's own SMTP listener/);

  const status = JSON.parse((await cli('status', '--json')).stdout) as { agents: { id: string; softwareVersion: string; smtpListen: string }[] };
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const a of status.agents) assert.match(a.softwareVersion, new RegExp(`^${pkg.version.replace(/\./g, '\\.')}( \\([0-9a-f]+\\))?$`));
  assert.deepEqual(status.agents.map((a) => a.smtpListen), agents.map((a) => `127.0.0.1:${a.port}`));
  const human = await cli('status');
  assert.match(human.stdout, new RegExp(`l1 .* ${pkg.version.replace(/\./g, '\\.')}`));
});

test('a nacking agent: hold exits 1 naming it; a disconnected agent blocks until --exclude; agent rm', async (t) => {
  const { api, agents, cli } = await setup(t, ['good', 'broken', 'gone']);
  await api.setRoute('example.com', OLD);
  await waitFor('all at version 1', () => agentsAt(api, 1, 3));
  await agents[2]!.cleanup();
  await waitFor('gone disconnected', async () => (await api.status()).agents.find((a) => a.id === 'gone')?.state === 'disconnected');

  const refused = await cli('hold', 'example.com');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr.trim(), /^mxswitch: .*gone/);
  assert.equal(refused.stderr.trim().split('\n').length, 1);

  const st = await cli('status');
  assert.equal(st.code, 1);
  assert.match(st.stderr, /fleet not converged on v1: gone disconnected/);

  // routes.json.tmp as a directory: the agent cannot persist the next table and nacks it.
  mkdirSync(join(agents[1]!.config.dataDir, 'routes.json.tmp'));
  const nack = await cli('hold', 'example.com', '--exclude', 'gone', '--timeout', '5s');
  assert.equal(nack.code, 1, nack.stdout);
  const line = nack.stderr.trim();
  assert.equal(line.split('\n').length, 1, nack.stderr);
  assert.match(line, /broken/);
  assert.match(line, /EISDIR/);

  const rm = await cli('agent', 'rm', 'gone', '--json');
  assert.equal(rm.code, 0, rm.stderr);
  assert.deepEqual(JSON.parse(rm.stdout), { removed: 'gone' });
  assert.deepEqual(
    (await api.status()).agents.map((a) => a.id),
    ['broken', 'good'],
  );
  const still = await cli('agent', 'rm', 'good');
  assert.equal(still.code, 1, 'a connected agent is not removed');
  assert.match(still.stderr, /connected/);
});

test('TLS: --ca verifies the controller, --cert/--key for mutual TLS; a plaintext or certless client is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mxs-cli-pki-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makePki(dir);
  const ctl = await startController({ grpc: { tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: true } } });
  t.after(() => ctl.cleanup());
  const env = { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN };

  const mtls = await runCli(['route', 'set', 'example.com', OLD, '--ca', pki.ca, '--cert', pki.clientCert, '--key', pki.clientKey, '--json'], env);
  assert.equal(mtls.code, 0, mtls.stderr);
  assert.equal((JSON.parse(mtls.stdout) as { version: number }).version, 1);
  const viaEnv = await runCli(['route', 'ls'], { ...env, MXSWITCH_CA: pki.ca, MXSWITCH_CERT: pki.clientCert, MXSWITCH_KEY: pki.clientKey });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);

  for (const args of [[], ['--ca', pki.ca]]) {
    const r = await runCli(['route', 'ls', ...args], env);
    assert.equal(r.code, 1, `route ls ${args.join(' ')}: ${r.stdout}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^mxswitch: cannot reach controller at ${ctl.address.replace(/\./g, '\\.')}`));
  }
});
