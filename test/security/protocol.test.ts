import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startAgent } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';

describe('protocol abuse', () => {
  let a: Awaited<ReturnType<typeof startAgent>>;
  before(async () => {
    a = await startAgent({ smtp: { maxConnections: 3, maxRecipients: 1000, idleTimeout: '1s', greetPause: '500ms' }, routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }] });
  });
  after(() => a.cleanup());

  /** Connects, writes `send` at once, and resolves with the first complete reply line (or what came before close). */
  function rawReply(send: string | undefined, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve) => {
      const s = connect(a.port, '127.0.0.1');
      let out = '';
      const done = () => {
        clearTimeout(timer);
        s.destroy();
        resolve(out);
      };
      const timer = setTimeout(done, timeoutMs);
      s.on('data', (d: Buffer) => {
        out += d.toString('latin1');
        if (/^\d{3} [^\r\n]*\r\n/m.test(out)) done();
      });
      s.on('close', done);
      s.on('error', () => undefined);
      if (send) s.on('connect', () => s.write(send));
    });
  }

  test('with smtp.greetPause a command before the greeting is refused (421, early talker)', async () => {
    assert.match(await rawReply('EHLO early.test\r\n'), /^421 .*talk too soon/);
  });

  test('a command line over 512 octets -> 421 and the connection closes', async () => {
    const c = await RawSmtp.open(a.port);
    assert.match(await c.command(`NOOP ${'a'.repeat(600)}`), /^421 .*too long/i);
    assert.equal(await c.reply(), '(closed)');
  });

  test('1,000 recipients: 1,000 accepted, the 1,001st gets 452 4.5.3 and the session goes on', async () => {
    const c = await RawSmtp.open(a.port);
    await c.command('EHLO many.test');
    await c.command('MAIL FROM:<s@sender.test>');
    for (let i = 0; i < 1000; i++) c.write(`RCPT TO:<u${i}@example.com>\r\n`);
    for (let i = 0; i < 1000; i++) assert.match(await c.reply(), /^250/, `rcpt ${i}`);
    assert.match(await c.command('RCPT TO:<u1000@example.com>'), /^452 4\.5\.3 /);
    assert.match(await c.command('DATA'), /^354/);
    c.write('Subject: many\r\n\r\nx\r\n.\r\n');
    assert.match(await c.reply(), /^250 2\.0\.0 Ok: queued as /);
    c.close();
    assert.equal(a.agent.queue.stats().total, 1000, 'every accepted recipient is in the queue');
  });

  test('NUL bytes and invalid UTF-8 in commands get a 5xx, never a crash', async () => {
    const c = await RawSmtp.open(a.port);
    await c.command('EHLO nul.test');
    assert.match(await c.command('MAIL FROM:<a\x00b@sender.test>'), /^5\d\d /);
    assert.match(await c.command('RCPT TO:<\xff\xfe@example.com>'), /^5\d\d /);
    assert.match(await c.command('NOOP'), /^250/);
    c.close();
  });

  test('an idle client is disconnected after smtp.idleTimeout', async () => {
    const c = await RawSmtp.open(a.port);
    const started = Date.now();
    assert.match(await c.reply(5000), /^421 /);
    assert.ok(Date.now() - started >= 900);
  });

  test('more connections than smtp.maxConnections -> 421', async () => {
    const open = await Promise.all([RawSmtp.open(a.port), RawSmtp.open(a.port), RawSmtp.open(a.port)]);
    assert.match(await rawReply(undefined), /^421 .*Too many connected clients/);
    for (const c of open) c.close();
  });
});

test('a client over smtp.connectionRateLimit new connections a minute gets 421 4.7.0; the limit is per client', async () => {
  const a = await startAgent({ smtp: { connectionRateLimit: 3 }, routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }] });
  try {
    for (let i = 0; i < 3; i++) {
      const c = await RawSmtp.open(a.port);
      assert.match(await c.command('EHLO rate.test'), /^250/, `connection ${i + 1}`);
      c.close();
    }
    const over = await new Promise<string>((resolve) => {
      const s = connect(a.port, '127.0.0.1');
      let out = '';
      s.on('data', (d: Buffer) => (out += d.toString()));
      s.on('close', () => resolve(out));
      s.on('error', () => resolve(out));
    });
    assert.match(over, /^421 4\.7\.0 Error: too many connections from /);
    assert.ok(a.agent.ingress.counters.rejected >= 1);
    // Another client address is not affected.
    const other = await new Promise<string>((resolve) => {
      const s = connect({ port: a.port, host: '127.0.0.1', localAddress: '127.0.0.2' });
      let out = '';
      s.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\r\n')) s.destroy();
      });
      s.on('close', () => resolve(out));
      s.on('error', () => resolve(out));
    });
    assert.match(other, /^220 /);
  } finally {
    await a.cleanup();
  }
});

/** Connects from `localAddress`, writes EHLO+QUIT at once (no waiting for the greeting), resolves with all the server said. */
function eagerSession(port: number, localAddress = '127.0.0.1'): Promise<string> {
  return new Promise<string>((resolve) => {
    const s = connect({ port, host: '127.0.0.1', localAddress });
    let text = '';
    const timer = setTimeout(() => s.destroy(), 10_000);
    s.on('connect', () => s.write('EHLO eager.test\r\nQUIT\r\n'));
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    s.on('error', () => undefined);
  });
}

test('without smtp.greetPause (the default) the greeting comes at once: a client that talks right after connect is served', async () => {
  const a = await startAgent({ routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }] });
  try {
    const out = await eagerSession(a.port);
    assert.match(out, /^220 mx\.test ESMTP[^\r]*\r\n250-mx\.test [^\r]*\r\n(?:250-[^\r]*\r\n)*250 [^\r]*\r\n221 2\.0\.0 /);
  } finally {
    await a.cleanup();
  }
});

test('smtp.greetPause: a client that waited for the greeting once is greeted at once afterwards (for a day); other clients still get the pause', async () => {
  const a = await startAgent({ smtp: { greetPause: '400ms' }, routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }] });
  const eager = (localAddress: string) => eagerSession(a.port, localAddress);
  try {
    assert.match(await eager('127.0.0.1'), /^421 .*talk too soon/);
    // A patient client passes the check.
    const patient = await RawSmtp.open(a.port);
    assert.match(await patient.command('EHLO patient.test'), /^250/);
    patient.close();
    // Now the same address may talk at once; another address may not.
    assert.match(await eager('127.0.0.1'), /^220 [^\r]*\r\n250-[^\r]*\r\n(?:250-[^\r]*\r\n)*250 [^\r]*\r\n221 /);
    assert.match(await eager('127.0.0.2'), /^421 .*talk too soon/);
  } finally {
    await a.cleanup();
  }
});
