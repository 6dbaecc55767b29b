import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { Spool } from '../../agent/spool/spool.js';
import { smtpClient, startAgent, testMessage, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';

const SHUTDOWN_TIMEOUT = 1000;

test('smtp.shutdownTimeout: sessions still open when it passes get 421 4.4.2 and are closed; stop completes; committed mail stays queued', { timeout: 60_000 }, async () => {
  const a = await startAgent({
    smtp: { shutdownTimeout: `${SHUTDOWN_TIMEOUT}ms`, idleTimeout: '60s' },
    // Held: committed mail stays in the queue, so the test can look for it after the stop.
    routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }],
  });
  const sessions: RawSmtp[] = [];
  let stopped: Promise<unknown> | undefined;
  try {
    const client = smtpClient(a.port);
    const info = await client.sendMail({ envelope: { from: 's@sender.test', to: ['committed@example.com'] }, raw: testMessage(71) });
    client.close();
    const committed = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$/.exec(info.response)?.[1];
    assert.ok(committed, info.response);

    // Idle after EHLO, mid-transaction (after RCPT), and inside DATA.
    const idle = await RawSmtp.open(a.port);
    const mid = await RawSmtp.open(a.port);
    const data = await RawSmtp.open(a.port);
    sessions.push(idle, mid, data);
    assert.match(await idle.command('EHLO idle.test'), /^250/);
    assert.match(await mid.command('EHLO mid.test'), /^250/);
    assert.match(await mid.command('MAIL FROM:<s@sender.test>'), /^250 /);
    assert.match(await mid.command('RCPT TO:<mid@example.com>'), /^250 /);
    assert.match(await data.command('EHLO data.test'), /^250/);
    assert.match(await data.command('MAIL FROM:<s@sender.test>'), /^250 /);
    assert.match(await data.command('RCPT TO:<data@example.com>'), /^250 /);
    assert.match(await data.command('DATA'), /^354/);
    // Past PART_BYTES (1 MiB) the ingress writes the data to the queue in parts as it arrives.
    data.write(`Subject: never finished\r\n\r\n${`${'x'.repeat(998)}\r\n`.repeat(1536)}`);
    await waitFor('the first part of the unfinished message staged', () => a.agent.queue.inspect.counts().bodyParts === 1);

    const stopping = Date.now();
    let stoppedAt = 0;
    stopped = a.agent.stop().then(() => (stoppedAt = Date.now()));
    const replies = await Promise.all(sessions.map((s) => s.reply(10_000)));
    const repliedAfter = Date.now() - stopping;
    for (const [i, reply] of replies.entries()) assert.equal(reply, '421 4.4.2 Server shutting down', `session ${i}`);
    assert.ok(repliedAfter >= SHUTDOWN_TIMEOUT - 100, `421 after ${repliedAfter} ms, before smtp.shutdownTimeout`);
    for (const [i, s] of sessions.entries()) assert.equal(await s.reply(10_000), '(closed)', `session ${i} stayed open after the 421`);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([stopped, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('agent.stop() did not complete')), 15_000)))]);
    clearTimeout(timer);
    assert.ok(stoppedAt - stopping >= SHUTDOWN_TIMEOUT - 100, `stop completed after ${stoppedAt - stopping} ms`);

    // The queue on disk: the committed message with its recipient, nothing of the unfinished transactions. The
    // staged part of the message cut off in DATA may outlive the stop (the queue closes before that session's
    // stream does); the next start removes it, as Agent.start does with recoverInFlight.
    const queue = new Spool(a.config.dataDir);
    try {
      await queue.recoverInFlight();
      assert.deepEqual(
        queue.allRecipients().map((r) => ({ msgId: r.msgId, rcpt: r.rcpt })),
        [{ msgId: committed, rcpt: 'committed@example.com' }],
      );
      assert.ok(queue.body(committed)?.toString('latin1').includes('Message-ID: <msg-71@sender.test>'));
      assert.equal(queue.inspect.counts().messages, 1);
      assert.equal(queue.inspect.counts().bodyParts, 0, 'parts of the unfinished message left behind');
    } finally {
      await queue.close();
    }
  } finally {
    for (const s of sessions) s.close();
    await (stopped ?? a.agent.stop());
    rmSync(a.config.dataDir, { recursive: true, force: true });
  }
});
