// The audit trail through the real CLI against a real controller and agent (gRPC on loopback): named operator
// tokens (tokens.admin as a list of {name, token}), the actor taken from the token whatever the client claims,
// and `audit ls` (who, when, what, old -> new) read with a viewer token. The single-string token form still works.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ADMIN_TOKEN, AGENT_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { grpcTransport } from '../helpers/transport.js';
import { tempDir } from '../helpers/agent.js';
import { writeYaml } from '../helpers/process.js';
import { runCli } from './run-cli.js';

const ALICE = 'alice-token-0123456789';
const BOB = 'bob-token-0123456789';
const VIEWER = 'viewer-token-0123456789';
const WHEN = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ';

test('named tokens: each change is recorded under its token\'s name (not what the client says); audit ls shows who, when, what, old -> new, newest first', async (t) => {
  const { ctl } = await fleet(t, grpcTransport, {
    agents: ['a1'],
    controller: { tokens: { agent: AGENT_TOKEN, admin: [{ name: 'alice', token: ALICE }, { name: 'bob', token: BOB }, { name: 'test-harness', token: ADMIN_TOKEN }], viewer: [{ name: 'grafana', token: VIEWER }] } },
  });
  // USER is what the CLI claims as the actor; the controller must not believe it.
  const as = (token: string, ...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: token, USER: 'mallory' });
  const ok = async (token: string, ...args: string[]) => {
    const r = await as(token, ...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r;
  };

  await ok(ALICE, 'route', 'set', 'example.com', 'smtp:[127.0.0.1]:2525');
  await ok(BOB, 'route', 'set', 'example.com', 'smtp:[127.0.0.1]:2526', '--tls', 'required');
  await ok(BOB, 'hold', 'example.com');
  await ok(ALICE, 'route', 'rm', 'example.com');
  const denied = await as(VIEWER, 'route', 'set', 'other.test', 'smtp:[127.0.0.1]:9');
  assert.equal(denied.code, 1);

  const ls = await ok(VIEWER, 'audit', 'ls');
  const lines = ls.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^WHEN +WHO +VERSION +ACTION +MATCH +CHANGE$/);
  const rows = lines.slice(1).map((l) => l.split(/ {2,}/));
  for (const r of rows) assert.match(r[0]!, new RegExp(`^${WHEN}$`));
  const op = /^bob \(hold (\S+)\)$/.exec(rows[1]![1]!)?.[1];
  assert.ok(op, `the hold is bob's operation: ${ls.stdout}`);
  assert.deepEqual(
    rows.map((r) => r.slice(1)),
    [
      ['alice', 'v4', 'remove', 'example.com', 'smtp:[127.0.0.1]:2526 held tls=required -> -'],
      [`bob (hold ${op})`, 'v3', 'hold', 'example.com', 'smtp:[127.0.0.1]:2526 tls=required -> smtp:[127.0.0.1]:2526 held tls=required'],
      ['bob', 'v2', 'set', 'example.com', 'smtp:[127.0.0.1]:2525 -> smtp:[127.0.0.1]:2526 tls=required'],
      ['alice', 'v1', 'set', 'example.com', '- -> smtp:[127.0.0.1]:2525'],
    ],
  );
  assert.ok(!ls.stdout.includes('mallory'), 'the client\'s claim is not the actor');

  const limited = await ok(ALICE, 'audit', 'ls', '--limit', '1', '--json');
  const json = JSON.parse(limited.stdout) as { records: { actor: string; version: number; action: string; old: { target: string; hold?: boolean } | null; new: unknown }[] };
  assert.deepEqual(json.records.map((r) => [r.actor, r.version, r.action, r.old?.target, r.old?.hold, r.new]), [['alice', 4, 'remove', 'smtp:[127.0.0.1]:2526', true, null]]);

  const bad = await as(ALICE, 'audit', 'ls', '--limit', 'x');
  assert.deepEqual([bad.code, bad.stderr], [2, 'mxswitch: --limit x: expected a positive integer\n']);
  const wrong = await as('no-such-token-123', 'audit', 'ls');
  assert.equal(wrong.code, 1);
});

test('a single admin token (the old form) is recorded as "admin"; an empty trail says so', async (t) => {
  const { ctl } = await fleet(t, grpcTransport, { agents: [] });
  const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: 'admin-token-0123456789' });
  assert.equal((await cli('audit', 'ls')).stdout, 'no changes recorded yet\n');
  assert.equal((await cli('route', 'set', 'example.com', 'smtp:[127.0.0.1]:2525')).code, 0);
  const ls = await cli('audit', 'ls');
  assert.match(ls.stdout, new RegExp(`^WHEN +WHO +VERSION +ACTION +MATCH +CHANGE\\n${WHEN}  admin  v1 +set +example\\.com +- -> smtp:\\[127\\.0\\.0\\.1\\]:2525\\n$`));
});

test('named tokens in the config: a name or a token used twice, or a viewer token equal to an admin one, is one config error line naming the key, exit 2', async () => {
  const dir = tempDir('mxs-tokens-');
  const start = (admin: unknown, viewer?: unknown) =>
    runCli(['controller', '--config', writeYaml(dir, 'controller.yaml', { dataDir: dir, grpc: { listen: '127.0.0.1:0' }, tokens: { agent: AGENT_TOKEN, admin, ...(viewer ? { viewer } : {}) } })]);
  const cases: [unknown, unknown, string][] = [
    [[{ name: 'alice', token: ALICE }, { name: 'alice', token: BOB }], undefined, 'tokens.admin.1.name: name "alice" is taken by another token'],
    [[{ name: 'alice', token: ALICE }, { name: 'bob', token: ALICE }], undefined, 'tokens.admin.1: the same token as alice\'s: each holder needs a token of their own'],
    [[{ name: 'alice', token: ALICE }], [{ name: 'grafana', token: ALICE }], 'tokens.viewer.0: must differ from tokens.admin, tokens.agent and every tokens.agents entry'],
    [[{ name: 'al ice', token: ALICE }], undefined, 'tokens.admin.0.name: letters, digits, . _ @ + - (max 64)'],
  ];
  for (const [admin, viewer, problem] of cases) {
    const r = await start(admin, viewer);
    assert.deepEqual([r.code, r.stderr], [2, `mxswitch: config error: ${problem}\n`]);
  }
});
