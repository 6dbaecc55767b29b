// Bulk queue surgery through the CLI, fleet-wide: a few hundred queued messages on two real agents behind a real
// controller (gRPC on loopback); counts per agent checked in the agents' own queues and at the next hop.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, agentsAt } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { freePort } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';
import { grpcTransport } from '../helpers/transport.js';
import { runCli } from './run-cli.js';

const PER_AGENT = 100;
/** Of each agent's messages, this many come from the null sender (bounces). */
const BOUNCES = 20;

interface Bulk {
  action: string;
  dryRun: boolean;
  recipients: number;
  messages: number;
}

test('queue shape sums the fleet; queue rm|hold|retry|release select by sender, match, state and age on every agent; --dry-run changes nothing; an operator release never frees a route hold', async (t) => {
  const hop = await freePort();
  const target = `smtp:[127.0.0.1]:${hop}`;
  const { ctl, api, agents } = await fleet(t, grpcTransport, {
    agents: ['b1', 'b2'],
    routes: () => ({ 'example.com': target, 'example.org': target }),
    agentConfig: { retry: { intervals: ['1h'], jitter: 0 } },
  });
  const cli = (...args: string[]) => runCli(['queue', ...args], { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });
  const results = (stdout: string) => (JSON.parse(stdout) as { results: { agent: string; result: Bulk }[] }).results.map((r) => [r.agent, r.result.recipients, r.result.messages]);
  const recipients = () => agents.map((a) => a.agent.queue.inspect.counts().recipients);

  // Every message has one recipient at example.com and one at example.org; nothing listens on the hop yet.
  await Promise.all(
    agents.map(async (a) => {
      const client = smtpClient(a.port);
      for (let n = 0; n < PER_AGENT; n++) {
        const to = [`u${n}@example.com`, `u${n}@example.org`];
        await client.sendMail({ envelope: { from: n < BOUNCES ? '' : 's@sender.test', to }, raw: testMessage(n, to[0]) });
      }
      client.close();
    }),
  );
  await waitFor('every recipient deferred', () => agents.every((a) => a.agent.queue.stats().byState.deferred === 2 * PER_AGENT), 60_000);

  const listed = await cli('ls', '--match', 'example.org', '--state', 'deferred', '--sender', '<>', '--json');
  assert.equal(listed.code, 0, listed.stderr);
  const lists = (JSON.parse(listed.stdout) as { results: { agent: string; result: { entries: { sender: string; recipients: { rcpt: string }[] }[] } }[] }).results;
  assert.deepEqual(lists.map((r) => [r.agent, r.result.entries.length, r.result.entries.every((e) => e.sender === '' && e.recipients.length === 1 && e.recipients[0]!.rcpt.endsWith('@example.org'))]), [['b1', BOUNCES, true], ['b2', BOUNCES, true]]);
  const young = await cli('ls', '--older-than', '1h', '--json');
  assert.deepEqual((JSON.parse(young.stdout) as { results: { result: { entries: unknown[] } }[] }).results.map((r) => r.result.entries.length), [0, 0], 'nothing is an hour old');
  const limited = await cli('ls', '--limit', '5', '--agent', 'b1');
  assert.match(limited.stdout, /\n-- \d+ KB in 5 messages, 10 recipients; 95 more not shown \(--limit\)\n$/);

  const shape = await cli('shape');
  assert.equal(shape.code, 0, shape.stderr);
  assert.match(shape.stdout, /^b1: 200 recipients in 2 domains\nb2: 200 recipients in 2 domains\n\nDOMAIN +T +5 +10 +20 .* +1280 +1280\+\nTOTAL +400 +400( +0){9}\nexample\.com +200 +200( +0){9}\nexample\.org +200 +200( +0){9}\n/);

  const dry = await cli('rm', '--sender', '<>', '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal(dry.stdout, [`b1: would remove 40 recipients of 20 messages (dry run: nothing changed)`, `b2: would remove 40 recipients of 20 messages (dry run: nothing changed)`, `every agent that answered: would remove 80 recipients of 40 messages (dry run: nothing changed)`, ''].join('\n'));
  assert.deepEqual(recipients(), [200, 200], 'a dry run changes nothing');

  const removed = await cli('rm', '--sender', '<>', '--json');
  assert.equal(removed.code, 0, removed.stderr);
  assert.deepEqual(results(removed.stdout), [['b1', 2 * BOUNCES, BOUNCES], ['b2', 2 * BOUNCES, BOUNCES]]);
  assert.deepEqual(recipients(), [160, 160]);
  assert.ok(agents.every((a) => a.agent.queue.allRecipients().every((r) => r.sender === 's@sender.test')), 'only the bounces went');

  const held = await cli('hold', '--match', 'example.org');
  assert.equal(held.code, 0, held.stderr);
  assert.equal(held.stdout, 'b1: 80 recipients of 80 messages held (operator hold)\nb2: 80 recipients of 80 messages held (operator hold)\nevery agent that answered: 160 recipients of 160 messages held (operator hold)\n');

  // A route hold on the same destination, acknowledged by both agents: only `mxswitch release` may end it.
  const { version } = await api.setRoute('example.org', target, { hold: true });
  await waitFor('both agents at the held table', () => agentsAt(api, version, 2));

  const sink = await new Sink().start(hop);
  t.after(() => sink.stop());
  const retried = await cli('retry', '--all', '--json');
  assert.equal(retried.code, 0, retried.stderr);
  assert.deepEqual(results(retried.stdout), [['b1', 80, 80], ['b2', 80, 80]], 'only the deferred example.com recipients: held ones are not retried');
  await waitFor('example.com delivered', () => sink.messages.length === 160, 60_000);
  assert.ok(sink.messages.every((m) => m.to.length === 1 && m.to[0]!.endsWith('@example.com')));

  const releasedB1 = await cli('release', '--all', '--agent', 'b1', '--json');
  assert.deepEqual(results(releasedB1.stdout), [['b1', 80, 80]]);
  const releasedRest = await cli('release', '--match', 'example.org', '--json');
  assert.deepEqual(results(releasedRest.stdout), [['b1', 0, 0], ['b2', 80, 80]]);
  // Released from the operator's hold, each recipient meets the route's hold at its next claim.
  await waitFor('every example.org recipient held by its route', () =>
    agents.every((a) => {
      const rows = a.agent.queue.allRecipients();
      return rows.length === 80 && rows.every((r) => r.state === 'held' && r.holdKind === 'route');
    }),
  );
  const again = await cli('release', '--all', '--dry-run', '--json');
  assert.deepEqual(results(again.stdout), [['b1', 0, 0], ['b2', 0, 0]], 'a route hold is not an operator hold');
  assert.equal(sink.messages.length, 160, 'nothing reached the held destination');
});
