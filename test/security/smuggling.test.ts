// SMTP smuggling through a next hop that drops control characters (CVE-2023-51764/51765/51766 and the NUL and
// vertical-tab forms): whatever a sender puts in DATA, the next hop must see exactly one message.
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { messageIds, startAgent, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

const DROPPED = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;

/** A next hop that drops control characters before parsing, as some MTAs do: a proxy that strips them in front of a sink. */
class DroppingHop {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly upstreamPort: number) {
    this.server = createServer((down) => {
      const up = connect(this.upstreamPort, '127.0.0.1');
      for (const s of [down, up]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => this.sockets.delete(s));
      }
      down.on('data', (d: Buffer) => up.write(Buffer.from(d.toString('latin1').replace(DROPPED, ''), 'latin1')));
      up.pipe(down);
      down.on('close', () => up.destroy());
      up.on('close', () => down.destroy());
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
    return this;
  }

  stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// End-of-data look-alikes from the published SMTP smuggling research, and the control-character forms.
const BARE_NEWLINE: Record<string, string> = {
  'LF.LF': '\n.\n',
  'LF.CRLF': '\n.\r\n',
  'CRLF.LF': '\r\n.\n',
  'CR.CR': '\r.\r',
  'CR.CRLF': '\r.\r\n',
  'CRLF.CR': '\r\n.\r',
  'LF.CR': '\n.\r',
  'CR.LF': '\r.\n',
};
const CONTROL: Record<string, string> = {
  'CRLF NUL.CRLF': '\r\n\x00.\r\n',
  'CRLF .NUL CRLF': '\r\n.\x00\r\n',
  'CRLF NUL.NUL CRLF': '\r\n\x00.\x00\r\n',
  'CRLF NUL NUL.CRLF': '\r\n\x00\x00.\r\n',
  'CRLF VT.CRLF': '\r\n\x0b.\r\n',
  'CRLF .VT CRLF': '\r\n.\x0b\r\n',
  'CRLF FF.CRLF': '\r\n\x0c.\r\n',
  'CRLF DEL.CRLF': '\r\n\x7f.\r\n',
  'CRLF SOH VT.CRLF': '\r\n\x01\x0b.\r\n',
};

describe('smuggling through a control-dropping next hop', () => {
  let sink: Sink;
  let hop: DroppingHop;
  before(async () => {
    sink = await new Sink().start();
    hop = await new DroppingHop(sink.port).start();
  });
  after(async () => {
    await hop.stop();
    await sink.stop();
  });

  for (const mode of ['normalize', 'reject'] as const) {
    test(`${mode}: every payload reaches the next hop as one message, or is refused with its own code`, async () => {
      const agent = await startAgent({ smtp: { bareNewline: mode }, routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${hop.port}` }] });
      try {
        for (const [name, eod] of Object.entries({ ...BARE_NEWLINE, ...CONTROL })) {
          sink.messages.length = 0;
          const before = agent.agent.scheduler.counters.delivered;
          const c = await RawSmtp.open(agent.port);
          await c.command('EHLO attacker.test');
          await c.command('MAIL FROM:<a@sender.test>');
          await c.command('RCPT TO:<user@example.com>');
          assert.match(await c.command('DATA'), /^354/);
          const smuggled = `MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nMessage-ID: <smuggled@x>\r\n\r\nsmuggled\r\n`;
          c.write(`Message-ID: <outer@x>\r\n\r\nhello${eod}${smuggled}.\r\n`);
          const reply = await c.reply();
          assert.match(await c.command('QUIT'), /^221/, name);
          c.close();
          // A control after the dot is harmless: the line starts with a dot and is dot-stuffed on the way out.
          if (mode === 'reject' && name !== 'CRLF .VT CRLF') {
            const expected = name in BARE_NEWLINE ? /^550 5\.5\.2 / : /^550 5\.6\.0 Error: (NUL in message data|control characters before a dot at the start of a line)$/;
            assert.match(reply, expected, `${name}: ${reply}`);
            assert.equal(agent.agent.queue.stats().total, 0, `${name}: queued in reject mode`);
            continue;
          }
          assert.match(reply, /^250 2\.0\.0 /, `${name}: ${reply}`);
          await waitFor(`${name} delivered`, () => agent.agent.scheduler.counters.delivered > before && agent.agent.queue.stats().total === 0);
          assert.equal(sink.messages.length, 1, `${name}: the next hop saw ${sink.messages.length} messages`);
          const m = sink.messages[0]!;
          assert.deepEqual(m.to, ['user@example.com'], name);
          assert.deepEqual(messageIds([m.data]), ['outer@x'], name);
          assert.match(m.data.toString('latin1'), /smuggled\r\n$/, `${name}: the would-be smuggled part is not the message's content`);
          // What the sender's would-be terminator became is plain content with CRLF line ends only.
          assert.doesNotMatch(m.data.toString('latin1'), /[^\r]\n|\r[^\n]/, `${name}: bare CR/LF relayed`);
        }
        assert.equal(sink.messages.filter((m) => m.to.includes('victim@example.com')).length, 0);
      } finally {
        await agent.cleanup();
      }
    });
  }
});

test('normalize: NUL is removed, controls in front of a line-start dot are dropped, other control characters pass unchanged', async () => {
  const sink = await new Sink().start();
  const agent = await startAgent({ routes: [{ match: 'example.com', target: sink.target }] });
  try {
    const c = await RawSmtp.open(agent.port);
    await c.command('EHLO a.test');
    await c.command('MAIL FROM:<a@sender.test>');
    await c.command('RCPT TO:<user@example.com>');
    await c.command('DATA');
    c.write('Subject: ctl\r\n\r\na\x00b\r\n\x0b.x\r\n\x0bkeep\r\nmid\x0cline\r\n\x00\x00\r\n.\r\n');
    assert.match(await c.reply(), /^250 /);
    c.close();
    await waitFor('delivered', () => sink.messages.length === 1);
    const body = sink.messages[0]!.data.toString('latin1');
    assert.ok(body.endsWith('\r\n\r\nab\r\n.x\r\n\x0bkeep\r\nmid\x0cline\r\n\r\n'), JSON.stringify(body.slice(-40)));
  } finally {
    await agent.cleanup();
    await sink.stop();
  }
});
