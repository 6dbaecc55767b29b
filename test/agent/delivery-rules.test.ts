import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { listQueue } from '../../agent/queue-ops.js';
import { messageIds, smtpClient, startAgent, testMessage, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

type Started = Awaited<ReturnType<typeof startAgent>>;

/** One message over a raw session, so the envelope sender can be the null sender `<>`; returns the queue id. */
async function sendRaw(port: number, from: string, to: readonly string[], n: number): Promise<string> {
  const c = await RawSmtp.open(port);
  try {
    assert.match(await c.command('EHLO client.test'), /^250/);
    assert.match(await c.command(`MAIL FROM:<${from}>`), /^250 /);
    for (const rcpt of to) assert.match(await c.command(`RCPT TO:<${rcpt}>`), /^250 /);
    assert.match(await c.command('DATA'), /^354/);
    c.write(testMessage(n, to[0]));
    const reply = await c.command('.');
    const id = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$/.exec(reply)?.[1];
    assert.ok(id, `not queued: ${reply}`);
    return id;
  } finally {
    c.close();
  }
}

/** waitFor, and on a timeout the agent's queue (states, attempts, last replies) in the error. */
async function waitForQueue(a: Started, what: string, cond: () => boolean, timeoutMs?: number): Promise<void> {
  await waitFor(what, cond, timeoutMs).catch((err: Error) => {
    const rows = a.agent.queue.allRecipients().map((r) => `${r.rcpt} ${r.state} attempts=${r.attempts} ${r.lastReply ?? ''}`);
    throw new Error(`${err.message}; queue: ${JSON.stringify(a.agent.queue.stats().byState)} ${rows.join('; ')}`);
  });
}

const messageCount = (a: Started) => a.agent.queue.inspect.counts().messages;

describe('delivery rules: bounces, unrouted mail, per-hop connections', () => {
  let sink: Sink;
  before(async () => {
    sink = await new Sink().start();
  });
  after(async () => {
    await sink.stop();
  });

  test('no DSN to <>: a bounced null-sender message and a bounced DSN leave the queue and nothing is sent', async () => {
    sink.messages.length = 0;
    // The next hop refuses both the recipient and the sender's own address (where a DSN would go).
    sink.rcptPolicy = (rcpt) => (rcpt === 'gone@example.com' || rcpt === 'sender@sender.test' ? { code: 550, message: '5.1.1 no such user' } : undefined);
    const a = await startAgent({
      routes: [
        { match: 'example.com', target: sink.target },
        { match: 'sender.test', target: sink.target },
      ],
    });
    try {
      // 1. From <>: the 550 removes the recipient; a DSN would have been committed before that (scheduler).
      const nullId = await sendRaw(a.port, '', ['gone@example.com'], 1);
      await waitFor('the null-sender message bounced', () => a.agent.scheduler.counters.bounced === 1 && !a.agent.queue.message(nullId));
      assert.equal(a.agent.queue.stats().total, 0, 'a DSN to <> was queued');
      assert.equal(messageCount(a), 0, 'a DSN to <> was queued');
      // 2. From a real sender: its DSN goes to sender@sender.test, which bounces too; that DSN gets no DSN.
      const id = await sendRaw(a.port, 'sender@sender.test', ['gone@example.com'], 2);
      await waitFor('the message and its DSN bounced', () => a.agent.scheduler.counters.bounced === 3 && a.agent.queue.stats().total === 0, 15_000);
      assert.equal(a.agent.queue.message(id), undefined);
      assert.equal(messageCount(a), 0, 'a DSN of a DSN was queued');
      // A sentinel through the same queue and next hop: once it is delivered, anything queued before it was too.
      sink.rcptPolicy = undefined;
      await sendRaw(a.port, 'sender@sender.test', ['ok@example.com'], 3);
      await waitFor('sentinel delivered, queue empty', () => sink.messages.length >= 1 && a.agent.queue.stats().total === 0);
      assert.deepEqual(
        sink.messages.map((m) => ({ from: m.from, to: m.to })),
        [{ from: 'sender@sender.test', to: ['ok@example.com'] }],
        'only the sentinel reached the next hop',
      );
      assert.deepEqual(messageIds(sink.messages.map((m) => m.data)), ['msg-3@sender.test']);
      assert.deepEqual(
        { ...a.agent.scheduler.counters, lastError: '' },
        { delivered: 1, deferred: 0, bounced: 3, lastError: '' },
        'delivered: the sentinel; bounced: the null-sender message, the message and its DSN',
      );
    } finally {
      sink.rcptPolicy = undefined;
      await a.cleanup();
    }
  });

  test('route removed while mail is queued: deferred 4.4.0 and kept (no attempt, no bounce); a route re-added delivers it', async () => {
    sink.messages.length = 0;
    const busy = await new Sink().start();
    let busyCalls = 0;
    busy.dataReply = () => (busyCalls++, { code: 451, message: '4.3.0 try again later' });
    const a = await startAgent({
      retry: { intervals: ['150ms'], maxAge: '1h', jitter: 0 },
      routes: [
        { match: 'example.com', target: busy.target },
        { match: 'sender.test', target: sink.target },
      ],
    });
    try {
      const id = await sendRaw(a.port, 'sender@sender.test', ['u@example.com'], 20);
      const row = () => a.agent.queue.recipientsOf(id)[0];
      await waitFor('deferred by the next hop', () => /^451 4\.3\.0 /.test(row()?.lastReply ?? ''));
      a.agent.reloadStaticRoutes([{ match: 'sender.test', target: sink.target }]);
      await waitFor('deferred for want of a route', () => (row()?.lastReply ?? '').startsWith('4.4.0 '));
      const callsWithoutRoute = busyCalls;
      const attempts = row()!.attempts;
      // Two more retries without a route: still deferred, still in the queue, the old next hop not tried.
      await waitFor('retried twice more without a route', () => (row()?.attempts ?? 0) >= attempts + 2);
      const r = row()!;
      assert.equal(r.state, 'deferred');
      assert.equal(r.lastReply, '4.4.0 no route for this recipient in the current table');
      assert.equal(r.route, null);
      assert.ok(r.dueAt !== null && r.dueAt > Date.now() - 5_000, 'not due for a retry');
      const ls = listQueue(a.agent.queue).entries;
      assert.equal(ls.length, 1);
      assert.equal(ls[0]!.id, id);
      assert.deepEqual(
        ls[0]!.recipients.map((x) => ({ rcpt: x.rcpt, state: x.state, lastReply: x.lastReply })),
        [{ rcpt: 'u@example.com', state: 'deferred', lastReply: '4.4.0 no route for this recipient in the current table' }],
      );
      assert.equal(busyCalls, callsWithoutRoute, 'the removed next hop was tried');
      assert.equal(a.agent.scheduler.counters.bounced, 0);
      assert.equal(sink.messages.length, 0, 'something (a DSN?) was sent');
      // The route comes back (to another next hop): delivered exactly once, the queue empties.
      a.agent.reloadStaticRoutes([
        { match: 'example.com', target: sink.target },
        { match: 'sender.test', target: sink.target },
      ]);
      await waitFor('delivered once the route is back', () => sink.messages.length >= 1 && a.agent.queue.stats().total === 0);
      assert.deepEqual(
        sink.messages.map((m) => ({ from: m.from, to: m.to })),
        [{ from: 'sender@sender.test', to: ['u@example.com'] }],
      );
      assert.deepEqual(messageIds(sink.messages.map((m) => m.data)), ['msg-20@sender.test']);
      assert.equal(busyCalls, callsWithoutRoute);
      assert.equal(a.agent.scheduler.counters.delivered, 1);
      assert.equal(a.agent.scheduler.counters.bounced, 0);
    } finally {
      await a.cleanup();
      await busy.stop();
    }
  });

  test('mail left without a route until retry.maxAge bounces with a DSN to its sender, never silently', async () => {
    sink.messages.length = 0;
    const busy = await new Sink().start();
    busy.dataReply = () => ({ code: 451, message: '4.3.0 try again later' });
    const a = await startAgent({
      retry: { intervals: ['150ms'], maxAge: '1500ms', jitter: 0 },
      routes: [
        { match: 'example.com', target: busy.target },
        { match: 'sender.test', target: sink.target },
      ],
    });
    try {
      const id = await sendRaw(a.port, 'sender@sender.test', ['u@example.com'], 21);
      await waitFor('deferred by the next hop', () => /^451 /.test(a.agent.queue.recipientsOf(id)[0]?.lastReply ?? ''));
      a.agent.reloadStaticRoutes([{ match: 'sender.test', target: sink.target }]);
      await waitFor('expiry DSN delivered, queue empty', () => sink.messages.length >= 1 && a.agent.queue.stats().total === 0, 15_000);
      assert.equal(sink.messages.length, 1, 'exactly one DSN');
      const dsn = sink.messages[0]!;
      assert.equal(dsn.from, '');
      assert.deepEqual(dsn.to, ['sender@sender.test']);
      const text = dsn.data.toString();
      assert.match(text, /Final-Recipient: rfc822; u@example\.com\r\nOriginal-Recipient: rfc822; u@example\.com\r\nAction: failed\r\nStatus: 5\.4\.7\r\n/);
      assert.match(text, /Diagnostic-Code: smtp; 5\.4\.7 delivery time expired; last reply: 4\.4\.0 no route for this recipient in the current table/);
      assert.match(text, new RegExp(`X-Mxswitch-Queue-ID: ${id}\r\n`));
      assert.equal(a.agent.scheduler.counters.bounced, 1);
    } finally {
      await a.cleanup();
      await busy.stop();
    }
  });

  test('delivery.connectionsPerHop: 20 messages due at once to a slow next hop never use more than 2 connections', async () => {
    const slow = await new Sink().start();
    slow.dataDelayMs = 150;
    const a = await startAgent({
      delivery: { connectionsPerHop: 2, pollInterval: '50ms', connectTimeout: '2s', greetingTimeout: '2s', socketTimeout: '10s', resolvers: ['127.0.0.1:9'] },
      // Held first, so that all 20 become due in the same moment when the hold is released.
      routes: [{ match: 'example.com', target: slow.target, hold: true }],
    });
    try {
      await Promise.all(
        Array.from({ length: 4 }, async (_, s) => {
          const client = smtpClient(a.port);
          for (let i = 0; i < 5; i++) {
            const n = 200 + s * 5 + i;
            await client.sendMail({ envelope: { from: 's@sender.test', to: [`u${n}@example.com`] }, raw: testMessage(n, `u${n}@example.com`) });
          }
          client.close();
        }),
      );
      await waitForQueue(a, '20 held', () => a.agent.queue.stats().byState.held === 20);
      assert.equal(slow.connections, 0);
      a.agent.reloadStaticRoutes([{ match: 'example.com', target: slow.target }]);
      await waitForQueue(a, '20 delivered, queue empty', () => slow.messages.length >= 20 && a.agent.queue.stats().total === 0, 30_000);
      assert.equal(slow.messages.length, 20);
      const ids = new Set(messageIds(slow.messages.map((m) => m.data)));
      assert.deepEqual([...ids].sort(), Array.from({ length: 20 }, (_, i) => `msg-${200 + i}@sender.test`).sort());
      assert.ok(slow.maxConcurrentConnections <= 2, `${slow.maxConcurrentConnections} concurrent connections to one next hop (limit 2)`);
      assert.equal(slow.maxConcurrentConnections, 2, 'the two allowed connections were not used in parallel');
    } finally {
      await a.cleanup();
      await slow.stop();
    }
  });
});
