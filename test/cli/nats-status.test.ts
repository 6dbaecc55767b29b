// NATS mode through the real CLI: a real nats-server, a controller and two agents on loopback. What a gRPC agent
// says in its Hello (software version, SMTP listener) a NATS agent writes into its bucket entry, so `status` and
// the self-listener refusal of `route set` work alike on both transports.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInfo } from '../../shared/version.js';
import { ADMIN_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { natsServerFor, natsTransport } from '../helpers/transport.js';
import { runCli } from './run-cli.js';

test('NATS mode: status shows each agent\'s software version; route set to an agent\'s own listener is refused, exit 2; route set --dry-run and audit ls work as over gRPC', async (t) => {
  const server = await natsServerFor((fn) => t.after(fn));
  const { ctl, agents } = await fleet(t, natsTransport(server), { agents: ['n1', 'n2'], routes: () => ({ 'example.com': 'smtp:[127.0.0.1]:9' }) });
  const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });
  const { version, commit } = buildInfo();
  const software = `${version}${commit ? ` (${commit})` : ''}`;

  const json = await cli('status', '--json');
  assert.equal(json.code, 0, json.stderr);
  const status = JSON.parse(json.stdout) as { agents: { id: string; softwareVersion: string; smtpListen: string }[] };
  assert.deepEqual(
    status.agents.map((a) => [a.id, a.softwareVersion, a.smtpListen]),
    agents.map((a, i) => [`n${i + 1}`, software, `127.0.0.1:${a.port}`]),
  );
  const human = await cli('status');
  for (const id of ['n1', 'n2']) assert.match(human.stdout, new RegExp(`\\n${id} .* ${software.replace(/[.()]/g, '\\$&')}`));

  const self = await cli('route', 'set', 'example.com', `smtp:[127.0.0.1]:${agents[1]!.port}`);
  assert.equal(self.code, 2);
  assert.equal(self.stderr, `mxswitch: target "smtp:[127.0.0.1]:${agents[1]!.port}" is agent n2's own SMTP listener (127.0.0.1:${agents[1]!.port}): mail would loop through the fleet; route to the mail server\n`);

  // The dry run and the audit trail work the same over NATS (commands by request/reply, audit in the ops bucket).
  const dry = await cli('route', 'set', 'example.com', 'smtp:[127.0.0.1]:10', '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal(dry.stdout.split('\n').slice(1).join('\n'), '- example.com  smtp:[127.0.0.1]:9\n+ example.com  smtp:[127.0.0.1]:10\nn1: 0 of 0 queued recipients would change next hop\nn2: 0 of 0 queued recipients would change next hop\nevery agent that answered: 0 of 0 queued recipients would change next hop\n');
  const audit = await cli('audit', 'ls');
  assert.match(audit.stdout, /^WHEN +WHO +VERSION +ACTION +MATCH +CHANGE\n\S+  admin  v1 +set +example\.com +- -> smtp:\[127\.0\.0\.1\]:9\n$/);
});
