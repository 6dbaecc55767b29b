// `route ls` and `status` before any table was set on the controller, through the real CLI against a real
// controller (gRPC) and agents with bootstrap routes in their configs; one expected agent never started.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, adminApi, agentsAt, startController, startFleetAgent } from '../helpers/controller.js';
import { runCli } from './run-cli.js';

test('at table version 0 route ls lists each agent\'s bootstrap routes; an expected agent that never connected says so in route ls and status', async (t) => {
  const ctl = await startController({ expectedAgents: ['b1', 'b2', 'b3'] });
  t.after(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  t.after(() => api.close());
  const b1 = await startFleetAgent(ctl.address, 'b1', { routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:2525' }, { match: '.example.org', target: 'smtp:[127.0.0.1]:2526', hold: true }] });
  t.after(() => b1.cleanup());
  const b2 = await startFleetAgent(ctl.address, 'b2', { routes: [] });
  t.after(() => b2.cleanup());
  await waitFor('b1 and b2 connected', () => agentsAt(api, 0, 2));
  const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });

  const ls = await cli('route', 'ls');
  assert.equal(ls.code, 0, ls.stderr);
  assert.equal(
    ls.stdout,
    [
      'route table version 0',
      'no table set on the controller yet: the agents relay with the bootstrap routes of their config files',
      'b1 (table version 0):',
      '  MATCH         TARGET                 HOLD  TLS  VERIFY',
      '  example.com   smtp:[127.0.0.1]:2525  -     may  none',
      '  .example.org  smtp:[127.0.0.1]:2526  held  may  none',
      'b2 (table version 0):',
      '  no routes: every recipient is refused (550 5.7.1)',
      'b3: never connected',
      '',
    ].join('\n'),
  );
  const json = JSON.parse((await cli('route', 'ls', '--json')).stdout) as { bootstrap: { agent: string; state: string; routes?: { match: string }[] }[] };
  assert.deepEqual(json.bootstrap.map((b) => [b.agent, b.state, b.routes?.map((r) => r.match)]), [['b1', 'connected', ['example.com', '.example.org']], ['b2', 'connected', []], ['b3', 'never connected', undefined]]);

  const status = await cli('status');
  assert.equal(status.code, 1, 'not converged: b3 is missing');
  assert.match(status.stdout, /\nb3 +- +never connected +v0 /);
  assert.match(status.stderr, /b3 never connected/);

  // Once a table is set, route ls shows that table only.
  await api.setRoute('example.net', 'smtp:[127.0.0.1]:2527');
  const after = await cli('route', 'ls');
  assert.equal(after.stdout, 'route table version 1\nMATCH        TARGET                 HOLD  TLS  VERIFY\nexample.net  smtp:[127.0.0.1]:2527  -     may  none\n');
});
