// Operator tokens through the real CLI against a real controller and agents (gRPC on loopback): what the viewer
// token may read and what it is refused, with the queues checked in the agents themselves.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { smtpClient, testMessage, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, AGENT_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { freePort } from '../helpers/process.js';
import { grpcTransport } from '../helpers/transport.js';
import { runCli } from './run-cli.js';

const VIEWER_TOKEN = 'viewer-token-0123456789';

test('the viewer token reads the queue (ls, shape, a --dry-run) and is refused a change in one line, exit 1, nothing removed', async (t) => {
  const hop = await freePort();
  const { ctl, agents } = await fleet(t, grpcTransport, {
    agents: ['v1', 'v2'],
    routes: () => ({ 'example.com': `smtp:[127.0.0.1]:${hop}` }),
    controller: { tokens: { agent: AGENT_TOKEN, admin: ADMIN_TOKEN, viewer: VIEWER_TOKEN } },
    agentConfig: { retry: { intervals: ['1h'], jitter: 0 } },
  });
  await Promise.all(
    agents.map(async (a) => {
      const client = smtpClient(a.port);
      for (let n = 0; n < 3; n++) await client.sendMail({ envelope: { from: 's@sender.test', to: [`u${n}@example.com`] }, raw: testMessage(n, `u${n}@example.com`) });
      client.close();
    }),
  );
  await waitFor('every recipient deferred', () => agents.every((a) => a.agent.queue.stats().byState.deferred === 3), 60_000);
  const viewer = (...args: string[]) => runCli(['queue', ...args], { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: VIEWER_TOKEN });

  const shape = await viewer('shape');
  assert.equal(shape.code, 0, shape.stderr);
  assert.match(shape.stdout, /^v1: 3 recipients in 1 domain\nv2: 3 recipients in 1 domain\n\nDOMAIN .*\nTOTAL +6 +6( +0){9}\nexample\.com +6 +6( +0){9}\n/);

  const listed = await viewer('ls', '--agent', 'v1');
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /-- \d+ KB in 3 messages, 3 recipients\n$/);

  const dry = await viewer('rm', '--all', '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal(dry.stdout, 'v1: would remove 3 recipients of 3 messages (dry run: nothing changed)\nv2: would remove 3 recipients of 3 messages (dry run: nothing changed)\nevery agent that answered: would remove 6 recipients of 6 messages (dry run: nothing changed)\n');

  const rm = await viewer('rm', '--all');
  assert.equal(rm.code, 1);
  assert.equal(rm.stdout, '');
  assert.equal(rm.stderr, 'mxswitch: controller refused the token: QueueCommand queueRemove needs the admin token: the viewer token is read-only\n');
  const hold = await viewer('hold', '--all');
  assert.equal(hold.code, 1);
  assert.equal(hold.stderr, 'mxswitch: controller refused the token: QueueCommand queueHold needs the admin token: the viewer token is read-only\n');
  assert.deepEqual(agents.map((a) => a.agent.queue.stats().byState.deferred), [3, 3], 'nothing removed or held');
});
