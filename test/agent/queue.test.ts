import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { smtpClient, startAgent, testMessage, waitFor } from '../helpers/agent.js';
import { freePort, runCli } from '../helpers/process.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

describe('queue: local operator commands and storage trouble', () => {
  let a: Awaited<ReturnType<typeof startAgent>>;
  let deadPort: number;
  before(async () => {
    deadPort = await freePort();
    a = await startAgent({ retry: { intervals: ['1h'], jitter: 0 }, routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${deadPort}` }, { match: 'example.org', target: `smtp:[127.0.0.1]:${deadPort}` }] });
    const client = smtpClient(a.port);
    await client.sendMail({ envelope: { from: 's@sender.test', to: ['a@example.com', 'b@example.org'] }, raw: testMessage(1) });
    await client.sendMail({ envelope: { from: '', to: ['c@example.com'] }, raw: testMessage(2) });
    client.close();
    await waitFor('both deferred', () => a.agent.queue.stats().byState.deferred === 3);
  });
  after(() => a.cleanup());

  const cli = (...args: string[]) => runCli(['queue', ...args, '--data-dir', a.config.dataDir]);

  test('queue ls --json lists envelope, states, next attempt and last reply; filters by match and state', async () => {
    const r = await cli('ls', '--json');
    assert.equal(r.code, 0, r.stderr);
    const { entries: list, more } = JSON.parse(r.stdout) as { more: number; entries: { id: string; sender: string; recipients: { rcpt: string; state: string; lastReply: string; nextAttempt: number }[] }[] };
    assert.equal(more, 0);
    assert.equal(list.length, 2);
    assert.deepEqual(list.map((e) => e.sender), ['s@sender.test', '']);
    assert.deepEqual(list[0]!.recipients.map((x) => [x.rcpt, x.state]), [['a@example.com', 'deferred'], ['b@example.org', 'deferred']]);
    assert.match(list[0]!.recipients[0]!.lastReply, /ECONNREFUSED|ECONNECTION/);
    assert.ok(list[0]!.recipients[0]!.nextAttempt > Date.now() + 30 * 60_000);
    const filtered = (JSON.parse((await cli('ls', '--json', '--match', 'example.org')).stdout) as { entries: { recipients: unknown[] }[] }).entries;
    assert.equal(filtered.length, 1);
    assert.equal(filtered[0]!.recipients.length, 1);
    const human = await cli('ls');
    assert.match(human.stdout, /^ID\s+AGE\s+SIZE\s+SENDER\s+RECIPIENT\s+STATE/);
    assert.match(human.stdout, /<>/);
    assert.match(human.stdout, /\n-- 1 KB in 2 messages, 3 recipients\n$/);
    const limited = await cli('ls', '--limit', '1');
    assert.match(limited.stdout, /^ID .*\n.*s@sender\.test.*\n.*\n-- 1 KB in 1 message, 2 recipients; 1 more not shown \(--limit\)\n$/);
  });

  test('queue show prints envelope and headers; unknown id exits 1', async () => {
    const id = a.agent.queue.allRecipients()[0]!.msgId;
    const r = await cli('show', id, '--json');
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout) as { headers: string; id: string };
    assert.equal(d.id, id);
    assert.match(d.headers, /^Received: from .*\r\nFrom: sender@sender\.test/s);
    const missing = await cli('show', 'NOPE');
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'mxswitch: no message NOPE in the queue\n');
  });

  test('queue hold / release by match; retry makes mail due; rm deletes it', async () => {
    const held = JSON.parse((await cli('hold', '--match', 'example.org', '--json')).stdout) as { recipients: number; messages: number };
    assert.deepEqual(held, { action: 'hold', dryRun: false, recipients: 1, messages: 1 });
    assert.equal(a.agent.queue.stats().byState.held, 1);
    const released = await cli('release', '--match', 'example.org');
    assert.equal(released.stdout, '1 recipient of 1 message released from operator hold\n');
    await waitFor('released row attempted and deferred again', () => a.agent.queue.stats().byState.deferred === 3);
    const sink = await new Sink().start(deadPort);
    try {
      const retried = JSON.parse((await cli('retry', '--all', '--json')).stdout) as { recipients: number };
      assert.equal(retried.recipients, 3);
      await waitFor('delivered after retry', () => sink.messages.length === 2 && a.agent.queue.stats().total === 0);
    } finally {
      await sink.stop();
    }
    const client = smtpClient(a.port);
    await client.sendMail({ envelope: { from: 's@sender.test', to: ['z@example.com'] }, raw: testMessage(3) });
    client.close();
    await waitFor('deferred', () => a.agent.queue.stats().byState.deferred === 1);
    const id = a.agent.queue.allRecipients()[0]!.msgId;
    const removed = await cli('rm', id);
    assert.equal(removed.stdout, '1 recipient of 1 message removed\n');
    assert.equal(a.agent.queue.stats().total, 0);
    for (const cmd of ['rm', 'release']) {
      const noArgs = await cli(cmd);
      assert.equal(noArgs.code, 2);
      assert.equal(noArgs.stderr, `mxswitch: queue ${cmd}: give a queue ID, --all, or a selection (--match, --state, --sender, --older-than)\n`);
    }
    const both = await cli('rm', id, '--all');
    assert.equal(both.code, 2);
    assert.equal(both.stderr, 'mxswitch: queue rm: give a queue ID or --all, not both\n');
  });

  test('queue full -> 452 4.3.1, never a 250; accepting resumes when space returns', async () => {
    a.agent.queue.inspect.limitPages(a.agent.queue.inspect.pages().count);
    const c = await RawSmtp.open(a.port);
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<s@sender.test>');
    await c.command('RCPT TO:<full@example.com>');
    await c.command('DATA');
    c.write(`Subject: full\r\n\r\n${'y'.repeat(900)}\r\n`.repeat(1000) + '.\r\n');
    assert.match(await c.reply(), /^452 4\.3\.1 /);
    assert.equal(a.agent.queue.stats().total, 0);
    a.agent.queue.inspect.limitPages();
    await c.command('MAIL FROM:<s@sender.test>');
    await c.command('RCPT TO:<full@example.com>');
    await c.command('DATA');
    c.write('Subject: ok\r\n\r\nok\r\n.\r\n');
    assert.match(await c.reply(), /^250 2\.0\.0 Ok: queued as /);
    c.close();
  });
});
