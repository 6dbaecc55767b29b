// `route set|rm --dry-run` through the real CLI against a real controller and two agents with queued mail (gRPC
// on loopback): the table diff, per agent how many queued recipients would change next hop, and nothing changed
// (table version, audit trail, the agents' queues).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { freePort } from '../helpers/process.js';
import { grpcTransport } from '../helpers/transport.js';
import { runCli } from './run-cli.js';

test('route set|rm --dry-run: the table diff and the queued recipients per agent that would change next hop; nothing changes', async (t) => {
  const a = `smtp:[127.0.0.1]:${await freePort()}`;
  const b = `smtp:[127.0.0.1]:${await freePort()}`;
  const { ctl, agents } = await fleet(t, grpcTransport, {
    agents: ['r1', 'r2'],
    routes: () => ({ 'example.com': a, 'example.org': a }),
    agentConfig: { retry: { intervals: ['1h'], jitter: 0 } },
  });
  // r1: 30 to example.com, 10 to example.org; r2: 20 to example.com. Nothing listens at a: all of it waits.
  const send = async (port: number, to: string[]) => {
    const client = smtpClient(port);
    for (const [n, rcpt] of to.entries()) await client.sendMail({ envelope: { from: 's@sender.test', to: [rcpt] }, raw: testMessage(n, rcpt) });
    client.close();
  };
  await send(agents[0]!.port, [...Array.from({ length: 30 }, (_, i) => `u${i}@example.com`), ...Array.from({ length: 10 }, (_, i) => `v${i}@example.org`)]);
  await send(agents[1]!.port, Array.from({ length: 20 }, (_, i) => `w${i}@example.com`));
  await waitFor('every recipient deferred', () => agents[0]!.agent.queue.stats().byState.deferred === 40 && agents[1]!.agent.queue.stats().byState.deferred === 20, 60_000);
  const cli = (...args: string[]) => runCli(['route', ...args], { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });
  const version = ctl.controller.store.version;
  const audited = (await ctl.controller.store.audit()).length;

  const moved = await cli('set', 'example.com', b, '--dry-run');
  assert.equal(moved.code, 0, moved.stderr);
  assert.equal(
    moved.stdout,
    [
      `dry run: nothing changed (the table stays at version ${version})`,
      `- example.com  ${a}`,
      `+ example.com  ${b}`,
      'r1: 30 of 40 queued recipients would change next hop',
      `  30  ${a} -> ${b}`,
      'r2: 20 of 20 queued recipients would change next hop',
      `  20  ${a} -> ${b}`,
      'every agent that answered: 50 of 60 queued recipients would change next hop',
      '',
    ].join('\n'),
  );

  const one = await cli('set', 'u7@example.com', b, '--tls', 'required', '--dry-run', '--json');
  assert.equal(one.code, 0, one.stderr);
  const j = JSON.parse(one.stdout) as { version: number; diff: { removed: unknown; added: { match: string; tls: string } }; results: { agent: string; result: { recipients: number; moved: number; moves: { from: string; to: string; recipients: number }[] } }[] };
  assert.deepEqual([j.version, j.diff.removed, j.diff.added.match, j.diff.added.tls], [version, null, 'u7@example.com', 'required']);
  assert.deepEqual(j.results.map((r) => [r.agent, r.result.recipients, r.result.moved, r.result.moves]), [
    ['r1', 40, 1, [{ from: a, to: b, recipients: 1 }]],
    ['r2', 20, 0, []],
  ]);

  const held = await cli('set', 'example.org', a, '--hold', '--dry-run');
  assert.equal(held.stdout.split('\n').slice(1, 5).join('\n'), [`- example.org  ${a}`, `+ example.org  ${a} held`, 'r1: 10 of 40 queued recipients would change next hop', `  10  ${a} -> ${a} (held)`].join('\n'));

  const rm = await cli('rm', 'example.org', '--dry-run');
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal(rm.stdout.split('\n').slice(1).join('\n'), [`- example.org  ${a}`, 'r1: 10 of 40 queued recipients would change next hop', `  10  ${a} -> no route`, 'r2: 0 of 20 queued recipients would change next hop', 'every agent that answered: 10 of 60 queued recipients would change next hop', ''].join('\n'));

  const same = await cli('set', 'example.com', a, '--dry-run');
  assert.match(same.stdout, new RegExp(`^dry run: nothing changed \\(the table stays at version ${version}\\)\\nno change to the table: example\\.com is already smtp:\\[127\\.0\\.0\\.1\\]:\\d+\\nr1: 0 of 40 queued recipients would change next hop\\n`));

  // What `route set` / `route rm` refuse, their dry runs refuse alike.
  const none = await cli('rm', 'nope.test', '--dry-run');
  assert.deepEqual([none.code, none.stderr], [1, 'mxswitch: no route for nope.test (dry run: nothing changed)\n']);
  const self = await cli('set', 'example.com', `smtp:[127.0.0.1]:${agents[0]!.port}`, '--dry-run');
  assert.deepEqual([self.code, self.stderr], [2, `mxswitch: target "smtp:[127.0.0.1]:${agents[0]!.port}" is agent r1's own SMTP listener (127.0.0.1:${agents[0]!.port}): mail would loop through the fleet; route to the mail server\n`]);
  const stale = await cli('set', 'example.com', b, '--dry-run', '--expect-version', String(version + 5));
  assert.deepEqual([stale.code, stale.stderr], [1, `mxswitch: the table is at version ${version}, not ${version + 5} (--expect-version); dry run: nothing changed\n`]);
  const wait = await cli('set', 'example.com', b, '--dry-run', '--wait');
  assert.deepEqual([wait.code, wait.stderr], [2, 'mxswitch: --dry-run changes nothing: there is nothing to --wait for\n']);

  assert.equal(ctl.controller.store.version, version, 'no table change');
  assert.equal((await ctl.controller.store.audit()).length, audited, 'nothing audited');
  assert.deepEqual(agents.map((x) => x.agent.queue.stats().byState.deferred), [40, 20], 'the queues as they were');
  assert.deepEqual(agents.map((x) => x.agent.router.table.version), [version, version]);
});
