import assert from 'node:assert/strict';
import { test } from 'node:test';
import { messageIds, smtpClient, startAgent, testMessage, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

const DATA_TIMEOUT = 1000;

for (const [name, partial] of [
  ['a few lines', 'Subject: stalled\r\n\r\nfirst lines of the message\r\n'],
  // Past PART_BYTES (1 MiB) the data is written to the queue in parts as it arrives: they must be dropped too.
  ['1.5 MB, stored in parts', `Subject: stalled\r\n\r\n${`${'x'.repeat(998)}\r\n`.repeat(1536)}`],
] as const) {
  test(`smtp.dataTimeout: a client that stops sending in DATA (${name}) gets 421 4.4.2 and is disconnected; nothing is queued`, async () => {
    const sink = await new Sink().start();
    const a = await startAgent({
      // The idle and per-line timeouts are far longer: only the DATA timeout can end this session in time.
      smtp: { dataTimeout: `${DATA_TIMEOUT}ms`, idleTimeout: '60s', commandTimeout: '60s', shutdownTimeout: '2s' },
      routes: [{ match: 'example.com', target: sink.target }],
    });
    const c = await RawSmtp.open(a.port);
    try {
      assert.match(await c.command('EHLO slow.test'), /^250/);
      assert.match(await c.command('MAIL FROM:<s@sender.test>'), /^250 /);
      assert.match(await c.command('RCPT TO:<u@example.com>'), /^250 /);
      assert.match(await c.command('DATA'), /^354/);
      const started = Date.now();
      c.write(partial);
      // The reply ends the session: 421, what RFC 5321 3.8 wants before a server closes.
      const reply = await c.reply(8_000);
      const after = Date.now() - started;
      assert.match(reply, /^421 4\.4\.2 mx\.test Error: timeout exceeded$/, `reply to a stalled DATA after ${after} ms`);
      assert.ok(after >= DATA_TIMEOUT - 100, `timed out after ${after} ms, before smtp.dataTimeout`);
      assert.equal(await c.reply(10_000), '(closed)', 'the session stayed open after the DATA timeout');
      assert.equal(a.agent.queue.stats().total, 0, 'a stalled message was queued');
      assert.equal(a.agent.queue.inspect.counts().messages, 0);
      await waitFor('staged parts dropped', () => a.agent.queue.inspect.counts().bodyParts === 0, 5_000);
      // The agent goes on: a message after it is accepted and delivered, and it is the only one at the sink.
      const client = smtpClient(a.port);
      const info = await client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(61) });
      client.close();
      assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
      await waitFor('the next message delivered', () => sink.messages.length >= 1 && a.agent.queue.stats().total === 0);
      assert.deepEqual(messageIds(sink.messages.map((m) => m.data)), ['msg-61@sender.test']);
    } finally {
      c.close();
      await a.cleanup();
      await sink.stop();
    }
  });
}
