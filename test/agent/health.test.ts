import assert from 'node:assert/strict';
import { test } from 'node:test';
import { smtpClient, startAgent, testMessage, waitFor } from '../helpers/agent.js';
import { freePort } from '../helpers/process.js';
import { Sink } from '../helpers/sink.js';

test('health: the last delivery error is shown while mail waits, and cleared once its mail has left the queue', async (t) => {
  const port = await freePort();
  const a = await startAgent({ routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${port}` }], retry: { intervals: ['200ms'], jitter: 0, maxAge: '1d' }, delivery: { pollInterval: '50ms', connectTimeout: '1s' } });
  t.after(() => a.cleanup());
  const client = smtpClient(a.port);
  t.after(() => client.close());
  await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(1) });
  await waitFor('a deferral', () => a.agent.health().lastDeliveryError !== '');
  assert.match(a.agent.health().lastDeliveryError, /^u@example\.com: /);

  // The next hop comes up: the mail goes, and with it the error.
  const sink = await new Sink().start(port);
  t.after(() => sink.stop());
  await waitFor('delivered', () => sink.messages.length === 1 && a.agent.health().total === 0, 15_000);
  assert.equal(a.agent.health().lastDeliveryError, '');
  assert.equal(a.agent.health().counters.deferred > 0, true, 'the deferral is still counted');
});
