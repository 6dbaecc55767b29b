import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { addressKey, hasRoutingInLocalPart, parseRecipient } from '../../shared/address.js';
import { startAgent, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink, type Received } from '../helpers/sink.js';

/** Recipients the route `example.com` covers and the agent must accept (250). */
const routed = ['user@example.com', 'USER@Example.COM', 'alice@example.com', 'Bob.Smith+tag@example.com', 'caf\u00e9@example.com'];
/** Recipients no route covers, or relay tricks on the routed domain: the agent must refuse them (5xx). */
const unrouted = [
  'victim@elsewhere.test',
  'a%b@example.com',
  '"x@y"@example.com',
  '@example.com:v@elsewhere.test',
  'b!v@example.com',
  'v@[127.0.0.1]',
  'v@example.com.',
  'v',
  '',
  'x@sub.example.com',
];
const addresses = fc.constantFrom(...routed, ...unrouted);
const bodyPiece = fc.constantFrom('line\r\n', '\n.\n', '\r.\r', '.\r\n', '..\r\n', 'x\ny', '\x00', 'Received: x\r\n', '\xff\xfe', `${'L'.repeat(1200)}\r\n`);
const body = fc.array(bodyPiece, { maxLength: 6 }).map((parts) => parts.join(''));

type Command = string | { body: string };
const single: fc.Arbitrary<Command> = fc.oneof(
  fc.constantFrom('EHLO fuzz.test', 'HELO fuzz.test', 'RSET', 'NOOP', 'VRFY root', 'EXPN all', 'HELP', 'AUTH PLAIN AAAA', 'STARTTLS', 'BDAT 10', 'GET / HTTP/1.0'),
  addresses.map((a) => `MAIL FROM:<${a}>`),
  addresses.map((a) => `RCPT TO:<${a}>`),
  body.map((b) => ({ body: b })),
  fc.string({ maxLength: 600 }).map((s) => s.replace(/[\r\n]/g, ' ')),
);
/** Noise: single commands, and now and then MAIL, RCPTs and DATA in a row (any sender, any recipients). */
const noise = (maxLength: number): fc.Arbitrary<Command[]> =>
  fc
    .array(
      fc.oneof(
        { weight: 4, arbitrary: single.map((c) => [c]) },
        {
          weight: 1,
          arbitrary: fc
            .tuple(addresses, fc.array(addresses, { minLength: 1, maxLength: 3 }), body)
            .map(([from, rcpts, b]): Command[] => [`MAIL FROM:<${from}>`, ...rcpts.map((r) => `RCPT TO:<${r}>`), { body: b }]),
        },
      ),
      { maxLength },
    )
    .map((groups) => groups.flat());

/** One full transaction: both routed and unrouted recipients, in random order. */
const transaction = fc
  .record({
    from: fc.constantFrom('sender@sender.test', '', 'USER@Example.COM'),
    accept: fc.array(fc.constantFrom(...routed), { minLength: 1, maxLength: 4 }),
    refuse: fc.array(fc.constantFrom(...unrouted), { minLength: 1, maxLength: 4 }),
    body,
  })
  .chain((t) =>
    fc
      .shuffledSubarray([...t.accept.map((a) => ({ rcpt: a, routed: true })), ...t.refuse.map((a) => ({ rcpt: a, routed: false }))], {
        minLength: t.accept.length + t.refuse.length,
      })
      .map((rcpts) => ({ from: t.from, rcpts, body: t.body })),
  );

/** RFC 5321 4.5.2 transparency: a line of the message that starts with "." gets another one. */
const dotStuff = (data: string) => data.replace(/(^|\r\n)\./g, '$1..');

/** What the client side knows was queued: the queue id from the 250 and the recipients accepted for it. */
interface Queued {
  id: string;
  from: string;
  rcpts: string[];
}

/**
 * A raw session that keeps the client's view of the transaction in step with the replies (as smtp-server keeps
 * the envelope: a repeated recipient, compared case-insensitively, replaces the earlier one in its place).
 */
class Session {
  closed = false;
  private from: string | undefined;
  private rcpts = new Map<string, string>();
  constructor(
    private readonly c: RawSmtp,
    private readonly queued: Queued[],
  ) {}

  static async open(port: number, queued: Queued[]): Promise<Session> {
    return new Session(await RawSmtp.open(port), queued);
  }

  /** One command (UTF-8) and its reply; DATA sends the (dot-stuffed) message only after a 354. */
  async send(cmd: Command): Promise<string> {
    const reply = typeof cmd === 'string' ? await this.line(cmd) : await this.data(cmd.body);
    if (reply === '(closed)' || reply === '(timeout)' || reply.startsWith('421')) {
      this.closed = true;
      return reply;
    }
    assert.match(reply, /^\d{3}[ -]/, `not an SMTP reply: ${reply}`);
    if (typeof cmd !== 'string' || !reply.startsWith('250')) return reply;
    const verb = cmd.slice(0, 4).toUpperCase();
    if (verb === 'EHLO' || verb === 'HELO' || verb === 'RSET') this.reset();
    // A source route (@a,@b:user@c) is dropped, as RFC 5321 4.1.1.3 allows: the envelope keeps user@c.
    else if (/^MAIL FROM:<(.*)>$/.test(cmd)) this.from = /^MAIL FROM:<(.*)>$/.exec(cmd)![1]!.replace(/^@[^:]*:/, '');
    else if (/^RCPT TO:<(.*)>$/.test(cmd) && this.from !== undefined) {
      const rcpt = /^RCPT TO:<(.*)>$/.exec(cmd)![1]!;
      this.rcpts.set(rcpt.toLowerCase(), rcpt);
    }
    return reply;
  }

  private async line(text: string): Promise<string> {
    this.c.write(Buffer.from(`${text}\r\n`, 'utf8'));
    return this.c.reply();
  }

  private async data(text: string): Promise<string> {
    const first = await this.line('DATA');
    if (!first.startsWith('354')) return first;
    this.c.write(Buffer.from(`${dotStuff(text)}\r\n.\r\n`, 'latin1'));
    const reply = await this.c.reply();
    const id = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$/.exec(reply)?.[1];
    if (id) this.queued.push({ id, from: this.from ?? '?', rcpts: [...this.rcpts.values()] });
    // smtp-server starts a new transaction after the end of data, whatever the reply.
    if (reply !== '(closed)' && reply !== '(timeout)') this.reset();
    return reply;
  }

  private reset(): void {
    this.from = undefined;
    this.rcpts.clear();
  }

  close(): void {
    this.c.close();
  }
}

/** The queue id in the agent's own Received header (the first line of what it relayed). */
const relayedId = (m: Received) => /^Received: from [^\r\n]*\r\n\tby mx\.test \(mxswitch\) with \S+ id ([0-9A-Z]+);/.exec(m.data.toString('latin1'))?.[1];
/** Domains are case-insensitive and the outgoing client writes them in lower case; local parts go as they are. */
const canonical = (addr: string) => addr.slice(0, addr.lastIndexOf('@') + 1) + addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();

let sink: Sink;
let a: Awaited<ReturnType<typeof startAgent>>;
before(async () => {
  sink = await new Sink().start();
  a = await startAgent({ smtp: { idleTimeout: '5s' }, routes: [{ match: 'example.com', target: sink.target }] });
});
after(async () => {
  await a.cleanup();
  await sink.stop();
});

test('random SMTP sessions: the next hop gets exactly the routed recipients accepted, never an unrouted one; the agent never crashes', async () => {
  let runs = 0;
  let runsDelivered = 0;
  let noiseMessages = 0;
  let reopened = 0;
  await fc.assert(
    fc.asyncProperty(noise(8), transaction, noise(3), async (before, txn, tail) => {
      runs++;
      const queued: Queued[] = [];
      const seen = sink.messages.length;
      let s = await Session.open(a.port, queued);
      for (const cmd of before) if (s.closed || (await s.send(cmd), s.closed)) break;
      // Noise that ended the session (421, a timeout): the transaction gets a fresh one.
      if (s.closed) {
        reopened++;
        s.close();
        s = await Session.open(a.port, queued);
      }
      assert.match(await s.send('EHLO fuzz.test'), /^250[ -]/);
      assert.match(await s.send(`MAIL FROM:<${txn.from}>`), /^250 /);
      for (const { rcpt, routed: ok } of txn.rcpts) {
        const reply = await s.send(`RCPT TO:<${rcpt}>`);
        if (ok) assert.match(reply, /^250 /, `routed ${rcpt} refused: ${reply}`);
        else {
          assert.match(reply, /^5\d\d 5\.\d{1,3}\.\d{1,3} /, `unrouted ${JSON.stringify(rcpt)} not refused: ${reply}`);
          if (reply.startsWith('550')) assert.match(reply, /^550 5\.7\.1 /, `${JSON.stringify(rcpt)}: ${reply}`);
        }
      }
      const count = queued.length;
      assert.match(await s.send({ body: txn.body }), /^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/);
      assert.equal(queued.length, count + 1);
      for (const cmd of tail) if (s.closed || (await s.send(cmd), s.closed)) break;
      s.close();
      noiseMessages += queued.length - 1;

      const probe = await RawSmtp.open(a.port);
      assert.match(await probe.command('EHLO probe.test'), /^250/, 'agent stopped answering');
      probe.close();
      // Whatever is still queued is routed, parsable and has its message.
      for (const row of a.agent.queue.allRecipients()) {
        const parsed = parseRecipient(row.rcpt);
        assert.ok(parsed.ok, `queued an unparsable recipient ${row.rcpt}`);
        assert.ok(a.agent.router.table.lookup(addressKey(row.rcpt)), `queued an unrouted recipient ${row.rcpt}`);
        assert.ok(!hasRoutingInLocalPart(parsed.value.local), `queued a routing trick ${row.rcpt}`);
      }
      // Counted in one statement: checked row by row, a delivery committed between two reads looked like an orphan.
      assert.equal(a.agent.queue.inspect.orphanRecipients(), 0, 'recipients without their message');

      // Every message queued in this run reaches the next hop once, with exactly the recipients accepted for it.
      await waitFor('every queued message at the next hop', () => sink.messages.length >= seen + queued.length && a.agent.queue.stats().total === 0, 15_000);
      const arrived = sink.messages.slice(seen);
      assert.deepEqual(arrived.map(relayedId).sort(), queued.map((q) => q.id).sort(), 'the next hop got other messages than those queued');
      for (const q of queued) {
        const m = arrived.find((x) => relayedId(x) === q.id)!;
        assert.deepEqual(m.to.map(canonical).sort(), q.rcpts.map(canonical).sort(), `recipients of ${q.id}`);
        assert.ok(m.to.every((rcpt) => routed.some((r) => canonical(r) === canonical(rcpt))), `an unrouted recipient reached the next hop: ${m.to.join(', ')}`);
        assert.equal(canonical(m.from), canonical(q.from));
      }
      runsDelivered++;
    }),
    { numRuns: 100, interruptAfterTimeLimit: 90_000, includeErrorInReport: true },
  );
  console.log(`# fuzz: runs=${runs} runs delivered=${runsDelivered} extra messages from noise=${noiseMessages} sessions the noise ended=${reopened}`);
  // Every run queued a transaction with refused recipients among the accepted ones, and it was delivered.
  assert.ok(runs >= 40, `only ${runs} runs in the time limit`);
  assert.equal(runsDelivered, runs, 'some runs delivered nothing');
  assert.equal(a.agent.queue.inspect.quickCheck(), 'ok');
  assert.equal(a.agent.queue.stats().total, 0);
});
