import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RouteTable } from '../../shared/routes.js';
import { messageIds, smtpClient, startAgent, testMessage, waitFor } from '../helpers/agent.js';
import { Sink } from '../helpers/sink.js';

describe('relay: ingest, route, deliver', () => {
  let sink: Sink;
  let other: Sink;
  before(async () => {
    sink = await new Sink().start();
    other = await new Sink().start();
  });
  after(async () => {
    await sink.stop();
    await other.stop();
  });

  test('100 messages over 10 concurrent sessions arrive byte for byte, queue empty afterwards', async () => {
    sink.messages.length = 0;
    const a = await startAgent({ routes: [{ match: 'example.com', target: sink.target }] });
    try {
      const sent = new Map<string, Buffer>();
      const long = `${'L'.repeat(5000)}\r\n`; // long lines are relayed unchanged, never folded
      await Promise.all(
        Array.from({ length: 10 }, async (_, s) => {
          const client = smtpClient(a.port);
          for (let i = 0; i < 10; i++) {
            const n = s * 10 + i;
            const raw = testMessage(n, 'user@example.com', `${long}8bit: caf\u00e9\r\n.leading dot\r\n`);
            const info = await client.sendMail({ envelope: { from: 'sender@sender.test', to: ['user@example.com'] }, raw });
            assert.match(info.response, /^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/);
            sent.set(`msg-${n}@sender.test`, raw);
          }
          client.close();
        }),
      );
      await waitFor('100 messages at the sink', () => sink.messages.length >= 100);
      assert.equal(sink.messages.length, 100);
      for (const m of sink.messages) {
        const id = messageIds([m.data])[0]!;
        const raw = sent.get(id);
        assert.ok(raw, `unexpected message ${id}`);
        const text = m.data.toString('latin1');
        assert.match(text, /^Received: from [^\r\n]+\r\n\tby mx\.test \(mxswitch\) with E?SMTP id [0-9A-Z]+;\r\n\t[^\r\n]+\r\n/);
        assert.ok(m.data.subarray(m.data.length - raw.length).equals(raw), `body of ${id} changed in transit`);
        assert.deepEqual(m.to, ['user@example.com']);
        assert.equal(m.from, 'sender@sender.test');
      }
      await waitFor('empty queue', () => a.agent.queue.stats().total === 0);
      assert.equal(a.agent.queue.inspect.counts().messages, 0);
    } finally {
      await a.cleanup();
    }
  });

  test('recipients split across two routes; a 550 at one bounces with a DSN to the sender', async () => {
    sink.messages.length = 0;
    other.messages.length = 0;
    other.rcptPolicy = (rcpt) => (rcpt === 'gone@other.test' ? { code: 550, message: '5.1.1 no such user' } : undefined);
    const a = await startAgent({
      routes: [
        { match: 'example.com', target: sink.target },
        { match: 'other.test', target: other.target },
        { match: 'sender.test', target: sink.target },
      ],
    });
    try {
      const client = smtpClient(a.port);
      await client.sendMail({
        envelope: { from: 'sender@sender.test', to: ['a@example.com', 'b@example.com', 'ok@other.test', 'gone@other.test'] },
        raw: testMessage(1),
      });
      client.close();
      await waitFor('delivery and DSN', () => sink.messages.length >= 2 && other.messages.length >= 1);
      await waitFor('empty queue', () => a.agent.queue.stats().total === 0);
      const toExample = sink.messages.filter((m) => m.from === 'sender@sender.test');
      assert.equal(toExample.length, 1, 'both example.com recipients share one transaction');
      assert.deepEqual(toExample[0]!.to.sort(), ['a@example.com', 'b@example.com']);
      assert.deepEqual(other.messages.map((m) => m.to), [['ok@other.test']]);
      const dsns = sink.messages.filter((m) => m.from === '');
      assert.equal(dsns.length, 1);
      assert.deepEqual(dsns[0]!.to, ['sender@sender.test']);
      const dsn = dsns[0]!.data.toString();
      assert.match(dsn, /Content-Type: multipart\/report; report-type=delivery-status;/);
      assert.match(dsn, /Content-Type: message\/delivery-status/);
      assert.match(dsn, /Final-Recipient: rfc822; gone@other\.test\r\nOriginal-Recipient: rfc822; gone@other\.test\r\nAction: failed\r\nStatus: 5\.1\.1/);
      assert.match(dsn, /Diagnostic-Code: smtp; 550 5\.1\.1 no such user/);
      assert.match(dsn, /Content-Type: text\/rfc822-headers\r\n\r\nReceived: from .*Message-ID: <msg-1@sender\.test>/s);
      assert.doesNotMatch(dsn, /ok@other\.test/, 'only the failed recipient is reported');
    } finally {
      other.rcptPolicy = undefined;
      await a.cleanup();
    }
  });

  test('next hop down -> deferred with the error; back up -> delivered on retry', async () => {
    const late = new Sink();
    await late.start();
    const port = late.port;
    await late.stop();
    const a = await startAgent({ routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${port}` }] });
    try {
      const client = smtpClient(a.port);
      await client.sendMail({ envelope: { from: 's@sender.test', to: ['x@example.com'] }, raw: testMessage(7) });
      client.close();
      await waitFor('deferred', () => a.agent.queue.stats().byState.deferred === 1);
      const row = a.agent.queue.allRecipients()[0]!;
      assert.match(row.lastReply ?? '', /ECONNREFUSED|ECONNECTION/);
      assert.ok(row.attempts >= 1);
      const back = await new Sink().start(port);
      try {
        await waitFor('delivered after the hop came back', () => back.messages.length === 1);
        await waitFor('empty queue', () => a.agent.queue.stats().total === 0);
        assert.deepEqual(messageIds(back.messages.map((m) => m.data)), ['msg-7@sender.test']);
      } finally {
        await back.stop();
      }
    } finally {
      await a.cleanup();
    }
  });

  test('451 then 250: deferred once, then delivered exactly once', async () => {
    sink.messages.length = 0;
    let calls = 0;
    sink.dataReply = () => (++calls === 1 ? { code: 451, message: '4.3.0 try again later' } : undefined);
    const a = await startAgent({ routes: [{ match: 'example.com', target: sink.target }] });
    try {
      const client = smtpClient(a.port);
      await client.sendMail({ envelope: { from: 's@sender.test', to: ['x@example.com'] }, raw: testMessage(8) });
      client.close();
      await waitFor('delivered', () => sink.messages.length === 1);
      await waitFor('empty queue', () => a.agent.queue.stats().total === 0);
      assert.equal(calls, 2);
      assert.equal(a.agent.scheduler.counters.deferred, 1);
      assert.equal(a.agent.scheduler.counters.delivered, 1);
      assert.equal(a.agent.scheduler.counters.bounced, 0);
    } finally {
      sink.dataReply = undefined;
      await a.cleanup();
    }
  });

  test('hold keeps mail (never attempted); release delivers it; a route change re-points queued mail', async () => {
    sink.messages.length = 0;
    other.messages.length = 0;
    const sinkConnections = sink.connections;
    const a = await startAgent({ routes: [{ match: 'example.com', target: sink.target, hold: true }] });
    try {
      const client = smtpClient(a.port);
      for (let i = 0; i < 5; i++) await client.sendMail({ envelope: { from: 's@sender.test', to: [`u${i}@example.com`] }, raw: testMessage(100 + i) });
      client.close();
      await waitFor('held', () => a.agent.queue.stats().byState.held === 5);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(sink.messages.length, 0, 'held mail was delivered');
      // Re-point while held: still nothing delivered anywhere.
      a.agent.reloadStaticRoutes([{ match: 'example.com', target: other.target, hold: true }]);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(sink.messages.length + other.messages.length, 0);
      a.agent.reloadStaticRoutes([{ match: 'example.com', target: other.target }]);
      await waitFor('released to the new next hop', () => other.messages.length === 5);
      assert.equal(sink.messages.length, 0, 'mail reached the old next hop after the re-point');
      // Not even a connection: a held (then re-pointed) destination never hears from us.
      assert.equal(sink.connections, sinkConnections, 'the held next hop was connected to');
      await waitFor('empty queue', () => a.agent.queue.stats().total === 0);
    } finally {
      await a.cleanup();
    }
  });

  test('hold time does not count toward expiry: held longer than maxAge, released to a failing hop, bounced maxAge after the release', async () => {
    sink.messages.length = 0;
    // The next hop answers every DATA with 451: each attempt is counted (and timed) here.
    const failing = await new Sink().start();
    const attempts: number[] = [];
    failing.dataReply = () => (attempts.push(Date.now()), { code: 451, message: '4.3.0 mailbox busy' });
    const maxAge = 2000;
    const a = await startAgent({
      retry: { intervals: ['200ms'], maxAge: `${maxAge}ms`, jitter: 0 },
      routes: [
        { match: 'example.com', target: failing.target, hold: true },
        { match: 'sender.test', target: sink.target },
      ],
    });
    try {
      const client = smtpClient(a.port);
      const info = await client.sendMail({ envelope: { from: 'sender@sender.test', to: ['x@example.com'] }, raw: testMessage(9) });
      client.close();
      const id = /queued as ([0-9A-Z]+)$/.exec(info.response)?.[1];
      assert.ok(id, info.response);
      await waitFor('held', () => a.agent.queue.stats().byState.held === 1);
      await new Promise((r) => setTimeout(r, 1.5 * maxAge)); // on hold for longer than maxAge
      assert.equal(a.agent.queue.stats().byState.held, 1, 'held mail expired or moved');
      assert.equal(failing.connections, 0, 'held mail was attempted');
      assert.equal(sink.messages.length, 0);
      const releasedAt = Date.now();
      a.agent.reloadStaticRoutes([
        { match: 'example.com', target: failing.target },
        { match: 'sender.test', target: sink.target },
      ]);
      // While it retries, the queue records every failed attempt with the next hop's reply.
      let recorded = 0;
      await waitFor(
        'expiry DSN delivered, queue empty',
        () => {
          const row = a.agent.queue.recipientsOf(id)[0];
          if (row && row.attempts > recorded) {
            recorded = row.attempts;
            assert.equal(row.state === 'deferred' || row.state === 'inflight', true, row.state);
            assert.equal(row.lastReply, '451 4.3.0 mailbox busy');
          }
          return sink.messages.length >= 1 && a.agent.queue.stats().total === 0;
        },
        15_000,
      );
      const dsn = sink.messages[0]!;
      const afterRelease = dsn.at - releasedAt;
      // Expiry counts from the release (plus the few ms before the hold began), not from arrival.
      assert.ok(afterRelease >= maxAge - 150, `bounced ${afterRelease} ms after the release, sooner than maxAge (${maxAge} ms)`);
      assert.ok(afterRelease < maxAge + 5000, `bounced ${afterRelease} ms after the release`);
      assert.ok(attempts.length >= 5, `only ${attempts.length} attempts in maxAge at 200 ms intervals`);
      assert.ok(attempts.every((t) => t >= releasedAt), 'attempted while held');
      // The last attempt bounced instead of being recorded; the queue saw (nearly) all of the others.
      assert.ok(recorded >= 4 && recorded <= attempts.length - 1, `queue recorded ${recorded} attempts of ${attempts.length}`);
      assert.equal(sink.messages.length, 1, 'exactly one DSN');
      assert.equal(dsn.from, '');
      assert.deepEqual(dsn.to, ['sender@sender.test']);
      const text = dsn.data.toString();
      assert.match(text, /Final-Recipient: rfc822; x@example\.com\r\nOriginal-Recipient: rfc822; x@example\.com\r\nAction: failed\r\nStatus: 5\.4\.7\r\n/);
      assert.match(text, /Diagnostic-Code: smtp; 5\.4\.7 delivery time expired; last reply: 451 4\.3\.0 mailbox busy\r\n/);
      assert.match(text, new RegExp(`X-Mxswitch-Queue-ID: ${id}\r\n`));
      assert.equal(a.agent.scheduler.counters.bounced, 1);
      assert.equal(a.agent.scheduler.counters.deferred, attempts.length - 1);
    } finally {
      await a.cleanup();
      await failing.stop();
    }
  });

  test('route lookup precedence: address > domain > nearest parent', () => {
    const t = new RouteTable([
      { match: '.example.com', target: 'smtp:[10.0.0.1]:25' },
      { match: '.eu.example.com', target: 'smtp:[10.0.0.2]:25' },
      { match: 'example.com', target: 'smtp:[10.0.0.3]:25' },
      { match: 'Alice@Example.com', target: 'smtp:mx.example.net:2525' },
    ]);
    assert.equal(t.lookup('alice@example.com')?.target, 'smtp:mx.example.net:2525');
    assert.equal(t.lookup('bob@example.com')?.target, 'smtp:[10.0.0.3]:25');
    assert.equal(t.lookup('bob@a.eu.example.com')?.target, 'smtp:[10.0.0.2]:25');
    assert.equal(t.lookup('bob@us.example.com')?.target, 'smtp:[10.0.0.1]:25');
    assert.equal(t.lookup('bob@example.org'), undefined);
    assert.equal(t.lookup('bob@notexample.com'), undefined);
    assert.throws(() => new RouteTable([{ match: 'example.com', target: 'smtp:[10.0.0.3]:99999' }]), /port/);
    assert.throws(() => new RouteTable([{ match: 'example.com', target: 'lmtp:x' }]), /smtp:\[host\]:port/);
    assert.throws(() => new RouteTable([{ match: 'a.com', target: 'smtp:[::1]:25' }, { match: 'A.com', target: 'smtp:[::1]:25' }]), /twice/);
  });
});
