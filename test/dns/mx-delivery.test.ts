import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { DeliveryClient } from '../../agent/delivery-client.js';
import { MxResolver } from '../../agent/mx-resolver.js';
import { agentConfigSchema, parseConfig } from '../../shared/config.js';
import { silentLogger } from '../../shared/logger.js';
import { parseTarget } from '../../shared/routes.js';
import { freePort } from '../helpers/process.js';
import { blackhole, ZoneServer } from './zone-server.js';

// MX-based delivery against a real DNS server on 127.0.0.1 and real SMTP servers on the loopback aliases
// 127.0.0.2 and 127.0.0.3, all on one port (an MX target carries one port for every MX host). 127.0.0.4
// has nothing listening: a host that refuses connections.

const HELO = 'mx-self.test';

/** A minimal SMTP server that records recipients; `rcptReply` scripts a refusal. */
class Sink {
  readonly received: string[][] = [];
  rcptReply: { code: number; message: string } | undefined;
  private readonly server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    disableReverseLookup: true,
    onRcptTo: (_addr, _s, cb) => cb(this.rcptReply ? Object.assign(new Error(this.rcptReply.message), { responseCode: this.rcptReply.code }) : undefined),
    onData: (stream, session, cb) => {
      stream.resume();
      stream.on('end', () => {
        this.received.push(session.envelope.rcptTo.map((r) => r.address));
        cb();
      });
    },
  });

  constructor(readonly address: string) {
    this.server.on('error', () => undefined);
  }

  start(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.address, () => resolve());
    });
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe('MX-based delivery', () => {
  const dns = new ZoneServer();
  const a = new Sink('127.0.0.2');
  const b = new Sink('127.0.0.3');
  let port = 0;
  // The agent's own path: the delivery thread, with the resolvers handed over to it.
let delivery: DeliveryClient;
  const config = parseConfig(agentConfigSchema, { id: 'mx-test', dataDir: '/nonexistent', delivery: { connectTimeout: '2s', greetingTimeout: '2s', socketTimeout: '5s', connectionsPerHop: 2 } }).delivery;
  const send = (domain: string, rcpt = `user@${domain}`) => delivery.send(parseTarget(`smtp:${domain}:${port}`), false, { from: 'sender@sender.test', to: [rcpt] }, Buffer.from('Subject: t\r\n\r\nhello\r\n')).then((a) => a.results);

  before(async () => {
    port = await freePort('127.0.0.2');
    await a.start(port);
    await b.start(port);
    await dns.start();
    dns
      .zone('test', 3600, 30)
      .a('mx-a.test', ['127.0.0.2'])
      .a('mx-b.test', ['127.0.0.3'])
      .a('mx-dead.test', ['127.0.0.4'])
      .a(HELO, ['127.0.0.9'])
      .a('self-by-address.test', ['127.0.0.1'])
      .mx('pref.test', [
        [20, 'mx-b.test'],
        [10, 'mx-a.test'],
      ])
      .mx('fallback.test', [
        [10, 'mx-dead.test'],
        [20, 'mx-b.test'],
      ])
      .a('bare.test', ['127.0.0.3'])
      .mx('null.test', [[0, '.']])
      .mx('loop.test', [[10, 'self-by-address.test']])
      .mx('loop-by-name.test', [
        [10, HELO],
        [20, 'mx-b.test'],
      ])
      .mx('backup.test', [
        [10, 'mx-a.test'],
        [20, HELO],
      ])
      .mx('refusing.test', [
        [10, 'mx-a.test'],
        [20, 'mx-b.test'],
      ]);
    dns.servfail.add('broken.test');
    delivery = new DeliveryClient({ config, heloName: HELO, options: { resolvers: [dns.resolver] }, logLevel: 'silent' }, silentLogger);
  });

  after(async () => {
    await delivery.close();
    await Promise.all([a.stop(), b.stop(), dns.stop()]);
  });

  test('the lowest preference MX host gets the mail', async () => {
    const [r] = await send('pref.test');
    assert.equal(r!.status, 'delivered', r!.reply);
    assert.deepEqual(a.received.at(-1), ['user@pref.test']);
    assert.equal(b.received.length, 0);
  });

  test('a host that refuses connections is skipped for the next MX host', async () => {
    const [r] = await send('fallback.test');
    assert.equal(r!.status, 'delivered', r!.reply);
    assert.deepEqual(b.received.at(-1), ['user@fallback.test']);
  });

  test('an SMTP-level answer decides: no fallback after a 4xx reply', async () => {
    a.rcptReply = { code: 450, message: '4.2.1 mailbox busy' };
    const before = b.received.length;
    try {
      const [r] = await send('refusing.test');
      assert.equal(r!.status, 'temporary');
      assert.match(r!.reply, /450 4\.2\.1 mailbox busy/);
      assert.equal(b.received.length, before, 'the second MX host is not tried');
    } finally {
      a.rcptReply = undefined;
    }
  });

  test('no MX records: the host\'s own address (RFC 5321 5.1)', async () => {
    const [r] = await send('bare.test');
    assert.equal(r!.status, 'delivered', r!.reply);
    assert.deepEqual(b.received.at(-1), ['user@bare.test']);
  });

  test('null MX is a permanent failure with 5.1.10', async () => {
    const [r] = await send('null.test');
    assert.equal(r!.status, 'permanent');
    assert.match(r!.reply, /^5\.1\.10 null\.test accepts no mail \(null MX, RFC 7505\)/);
  });

  test('NXDOMAIN is permanent, SERVFAIL temporary', async () => {
    const [nx] = await send('no-such-domain.test');
    assert.equal(nx!.status, 'permanent');
    assert.match(nx!.reply, /^5\.1\.2 domain no-such-domain\.test does not exist \(NXDOMAIN/);
    const [sf] = await send('broken.test');
    assert.equal(sf!.status, 'temporary');
    assert.match(sf!.reply, /^4\.4\.3 DNS lookup of MX for broken\.test failed: SERVFAIL/);
  });

  test('an MX host that is this machine: deferred with the loop message', async () => {
    const [byAddress] = await send('loop.test');
    assert.equal(byAddress!.status, 'temporary');
    assert.match(byAddress!.reply, /^4\.4\.6 mail for loop\.test loops back to myself/);
    // By name: we are the preference-10 host; the preference-20 host would only hand it back (RFC 5321 5.1).
    const [byName] = await send('loop-by-name.test');
    assert.equal(byName!.status, 'temporary');
    assert.match(byName!.reply, /^4\.4\.6 mail for loop-by-name\.test loops back to myself/);
  });

  test('as a backup MX we forward to the better-preference host', async () => {
    const [r] = await send('backup.test');
    assert.equal(r!.status, 'delivered', r!.reply);
    assert.deepEqual(a.received.at(-1), ['user@backup.test']);
  });

  test('every MX host unreachable: temporary, naming the hosts tried', async () => {
    dns.a('mx-dead2.test', ['127.0.0.5']).mx('all-dead.test', [
      [10, 'mx-dead.test'],
      [20, 'mx-dead2.test'],
    ]);
    const [r] = await send('all-dead.test');
    assert.equal(r!.status, 'temporary');
    assert.match(r!.reply, /no MX host of all-dead\.test answered: mx-dead\.test\[127\.0\.0\.4\]: .*; mx-dead2\.test\[127\.0\.0\.5\]: /);
  });
});

describe('MxResolver', () => {
  const dns = new ZoneServer();
  before(async () => {
    await dns.start();
    dns
      .zone('test')
      .a('e1.test', ['127.0.0.11'])
      .a('e2.test', ['127.0.0.12'])
      .a('e3.test', ['127.0.0.13'])
      .mx('equal.test', [
        [10, 'e1.test'],
        [10, 'e2.test'],
        [5, 'e3.test'],
      ]);
  });
  after(() => dns.stop());

  test('preference order; equal preferences shuffled', async () => {
    const values = [0.9, 0.1, 0.5];
    let i = 0;
    const fixed = new MxResolver({ hostname: HELO, resolvers: [dns.resolver], random: () => values[i++ % values.length]!, localAddresses: () => new Set() });
    const r = await fixed.resolve('equal.test');
    assert.ok(r.ok);
    // keys: e1 0.9, e2 0.1, e3 0.5 -> e3 (pref 5), then e2 before e1
    assert.deepEqual(
      r.candidates.map((c) => [c.preference, c.host, c.address]),
      [
        [5, 'e3.test', '127.0.0.13'],
        [10, 'e2.test', '127.0.0.12'],
        [10, 'e1.test', '127.0.0.11'],
      ],
    );

    const shuffled = new MxResolver({ hostname: HELO, resolvers: [dns.resolver], localAddresses: () => new Set() });
    const seconds = new Set<string>();
    for (let n = 0; n < 40 && seconds.size < 2; n++) {
      const x = await shuffled.resolve('equal.test');
      assert.ok(x.ok);
      assert.equal(x.candidates[0]!.host, 'e3.test');
      seconds.add(x.candidates[1]!.host);
    }
    assert.deepEqual([...seconds].sort(), ['e1.test', 'e2.test'], 'both orders of the equal-preference hosts occur');
    assert.equal(dns.queries.filter((q) => q.name === 'equal.test').length, 2, 'answers are cached for their TTL');
  });

  test('a resolver that times out: the next one is asked; none left -> temporary', async () => {
    const hole = await blackhole();
    try {
      const failover = new MxResolver({ hostname: HELO, resolvers: [hole.resolver, dns.resolver], timeoutMs: 300, localAddresses: () => new Set() });
      const ok = await failover.resolve('equal.test');
      assert.ok(ok.ok);
      const only = new MxResolver({ hostname: HELO, resolvers: [hole.resolver], timeoutMs: 300, localAddresses: () => new Set() });
      const r = await only.resolve('equal.test');
      assert.ok(!r.ok);
      assert.equal(r.status, 'temporary');
      assert.match(r.reply, /^4\.4\.3 DNS lookup of MX for equal\.test failed: no answer after 2 tries/);
    } finally {
      await hole.stop();
    }
  });
});
