import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startAgent } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

describe('ingress: relay control, limits and SMTP smuggling', () => {
  let sink: Sink;
  let a: Awaited<ReturnType<typeof startAgent>>;
  before(async () => {
    sink = await new Sink().start();
    a = await startAgent({
      smtp: { maxMessageSize: '64KB', maxRecipients: 100 },
      routes: [
        { match: 'example.com', target: sink.target },
        { match: '.sub.example.org', target: sink.target },
        { match: 'special%route@example.net', target: sink.target },
      ],
    });
  });
  after(async () => {
    await a.cleanup();
    await sink.stop();
  });

  async function session(): Promise<RawSmtp> {
    const c = await RawSmtp.open(a.port);
    assert.match(await c.command('EHLO client.test'), /^250/);
    return c;
  }

  test('EHLO advertises SIZE, PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES and no AUTH', async () => {
    const c = await RawSmtp.open(a.port);
    const ehlo = await c.command('EHLO client.test');
    for (const ext of ['SIZE 65536', 'PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES']) assert.match(ehlo, new RegExp(`^250[- ]${ext}$`, 'm'));
    assert.doesNotMatch(ehlo, /AUTH|STARTTLS/);
    c.close();
  });

  test('relay tricks are refused with their exact reply (550 5.7.1 relay denied, 501 5.1.3 bad syntax); routed addresses are accepted', async () => {
    const denied = (rcpt: string) => `550 5.7.1 <${rcpt}>: Relay access denied`;
    const syntax = '501 5.1.3 Error: Bad recipient address syntax';
    const refused: [string, string][] = [
      ['victim@elsewhere.test', denied('victim@elsewhere.test')],
      ['victim%elsewhere.test@example.com', denied('victim%elsewhere.test@example.com')],
      ['"victim@elsewhere.test"@example.com', syntax],
      // A source route is stripped by the parser: what is judged is the final address.
      ['@example.com:victim@elsewhere.test', denied('victim@elsewhere.test')],
      ['elsewhere.test!victim@example.com', denied('elsewhere.test!victim@example.com')],
      ['victim@[127.0.0.1]', denied('victim@[127.0.0.1]')],
      ['victim@[IPv6:::1]', denied('victim@[IPv6:::1]')],
      ['victim@example.com.', syntax],
      ['victim', syntax],
      ['victim@sub.example.org.', syntax],
      ['victim@example.org', denied('victim@example.org')],
      ['victim@elsewhere.test@example.com', syntax],
      ['Victim%Elsewhere.test@EXAMPLE.com', denied('Victim%Elsewhere.test@EXAMPLE.com')],
    ];
    const accepted = ['user@example.com', 'User@EXAMPLE.COM', 'user@a.sub.example.org', 'special%route@example.net'];
    const c = await session();
    assert.match(await c.command('MAIL FROM:<s@sender.test>'), /^250/);
    for (const [rcpt, expected] of refused) assert.equal(await c.command(`RCPT TO:<${rcpt}>`), expected, rcpt);
    for (const rcpt of accepted) assert.match(await c.command(`RCPT TO:<${rcpt}>`), /^250/, rcpt);
    assert.match(await c.command('RSET'), /^250/);
    c.close();
  });

  test('SIZE over the limit -> 552 5.3.4 at MAIL FROM; oversized data -> 552 5.3.4 at end of DATA', async () => {
    const c = await session();
    assert.match(await c.command('MAIL FROM:<s@sender.test> SIZE=10000000'), /^552 5\.3\.4 /);
    assert.match(await c.command('MAIL FROM:<s@sender.test>'), /^250/);
    assert.match(await c.command('RCPT TO:<user@example.com>'), /^250/);
    assert.match(await c.command('DATA'), /^354/);
    c.write(`Subject: big\r\n\r\n${'x'.repeat(998)}\r\n`.repeat(70) + '.\r\n');
    assert.match(await c.reply(), /^552 5\.3\.4 /);
    c.close();
  });

  test('more than 50 Received headers -> 554 5.4.6 loop', async () => {
    const c = await session();
    await c.command('MAIL FROM:<s@sender.test>');
    await c.command('RCPT TO:<user@example.com>');
    await c.command('DATA');
    c.write(`${'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n'.repeat(50)}Subject: loop\r\n\r\nx\r\n.\r\n`);
    assert.match(await c.reply(), /^554 5\.4\.6 /);
    c.close();
  });

  test('a recipient limit answers 452 and the session goes on', async () => {
    const c = await session();
    await c.command('MAIL FROM:<s@sender.test>');
    for (let i = 0; i < 100; i++) c.write(`RCPT TO:<u${i}@example.com>\r\n`);
    for (let i = 0; i < 100; i++) assert.match(await c.reply(), /^250/);
    assert.match(await c.command('RCPT TO:<u100@example.com>'), /^452 4\.5\.3/);
    assert.match(await c.command('RSET'), /^250/);
    c.close();
  });
});
