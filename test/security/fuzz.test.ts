import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { addressKey, hasRoutingInLocalPart, parseRecipient } from '../../shared/address.js';
import { startAgent } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

const addresses = fc.constantFrom(
  'user@example.com',
  'USER@Example.COM',
  'victim@elsewhere.test',
  'a%b@example.com',
  '"x@y"@example.com',
  '@example.com:v@elsewhere.test',
  'b!v@example.com',
  'v@[127.0.0.1]',
  'v@example.com.',
  'v',
  '',
  'caf\u00e9@example.com',
  'x@sub.example.com',
);
const bodyPiece = fc.constantFrom('line\r\n', '\n.\n', '\r.\r', '.\r\n', '..\r\n', 'x\ny', '\x00', 'Received: x\r\n', '\xff\xfe', `${'L'.repeat(1200)}\r\n`);
const command = fc.oneof(
  fc.constantFrom('EHLO fuzz.test', 'HELO fuzz.test', 'RSET', 'NOOP', 'VRFY root', 'EXPN all', 'HELP', 'AUTH PLAIN AAAA', 'STARTTLS', 'BDAT 10', 'GET / HTTP/1.0'),
  addresses.map((a) => `MAIL FROM:<${a}>`),
  addresses.map((a) => `RCPT TO:<${a}>`),
  fc.array(bodyPiece, { maxLength: 6 }).map((parts) => ({ data: `DATA\r\n${parts.join('')}\r\n.\r\n` })),
  fc.string({ maxLength: 600 }).map((s) => s.replace(/[\r\n]/g, ' ')),
);

let sink: Sink;
let a: Awaited<ReturnType<typeof startAgent>>;
before(async () => {
  sink = await new Sink().start();
  a = await startAgent({ smtp: { idleTimeout: '5s' }, routes: [{ match: 'example.com', target: sink.target, hold: true }] });
});
after(async () => {
  await a.cleanup();
  await sink.stop();
});

test('random SMTP sessions: the agent never crashes, never queues an unrouted recipient, and its queue stays consistent', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 12 }), async (commands) => {
      const c = await RawSmtp.open(a.port);
      for (const cmd of commands) {
        const reply = typeof cmd === 'string' ? await c.command(cmd) : (c.write(cmd.data), await c.reply());
        if (reply === '(closed)') break;
        assert.match(reply, /^\d{3}[ -]|^\(timeout\)$/, `not an SMTP reply: ${reply}`);
      }
      c.close();
      const probe = await RawSmtp.open(a.port);
      assert.match(await probe.command('EHLO probe.test'), /^250/, 'agent stopped answering');
      probe.close();
      for (const row of a.agent.queue.allRecipients()) {
        const parsed = parseRecipient(row.rcpt);
        assert.ok(parsed.ok, `queued an unparsable recipient ${row.rcpt}`);
        assert.ok(a.agent.router.table.lookup(addressKey(row.rcpt)), `queued an unrouted recipient ${row.rcpt}`);
        assert.ok(!hasRoutingInLocalPart(parsed.value.local), `queued a routing trick ${row.rcpt}`);
        assert.ok(a.agent.queue.message(row.msgId), `recipient ${row.id} without its message`);
      }
    }),
    { numRuns: 40, interruptAfterTimeLimit: 60_000 },
  );
  assert.equal(a.agent.queue.db.pragma('quick_check', { simple: true }), 'ok');
  assert.equal(sink.messages.length, 0, 'held mail was delivered');
});
