// Recipient verification by probe (`verify: probe`): real agents asking a real next hop that refuses unknown users.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startAgent, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';
import { NatsServer } from '../helpers/nats-server.js';
import { grpcTransport, natsTransport } from '../helpers/transport.js';
import { runCli } from '../cli/run-cli.js';

let nats: NatsServer;
before(async () => {
  nats = await NatsServer.start();
});
after(() => nats.stop());

const USERS = new Set(['alice@example.com', 'bob@example.com']);

/** A next hop that knows two users and refuses everyone else like Postfix does; counts the RCPTs it is asked. */
async function directory(): Promise<Sink & { asked: string[] }> {
  const sink = Object.assign(new Sink(), { asked: [] as string[] });
  sink.rcptPolicy = (rcpt) => {
    sink.asked.push(rcpt);
    return USERS.has(rcpt.toLowerCase()) ? undefined : { code: 550, message: '5.1.1 <' + rcpt + '>: Recipient address rejected: User unknown in local recipient table' };
  };
  return sink.start();
}

/** RCPT replies for `rcpts` in one transaction; with `data`, the message is sent when any was accepted. */
async function transaction(port: number, rcpts: readonly string[], data?: string): Promise<{ rcpt: string[]; data?: string }> {
  const c = await RawSmtp.open(port);
  try {
    await c.command('EHLO sender.test');
    await c.command('MAIL FROM:<someone@sender.test>');
    const rcpt: string[] = [];
    for (const r of rcpts) rcpt.push(await c.command(`RCPT TO:<${r}>`));
    if (data === undefined || !rcpt.some((r) => r.startsWith('250'))) return { rcpt };
    await c.command('DATA');
    return { rcpt, data: await c.command(`${data}\r\n.`) };
  } finally {
    c.close();
  }
}

const queued = (a: { agent: { queue: { inspect: { counts(): { recipients: number } } } } }) => a.agent.queue.inspect.counts().recipients;

test('verify: probe refuses unknown users at RCPT with the next hop\'s text (nothing queued, no DSN), caches answers across a restart, never probes a held route', { timeout: 60_000 }, async (t) => {
  const sink = await directory();
  t.after(() => sink.stop());
  const route = { match: 'example.com', target: sink.target, verify: 'probe' };
  const first = await startAgent({ routes: [route] });
  t.after(() => first.cleanup());
  const dataDir = first.config.dataDir;

  const sent = await transaction(first.port, ['alice@example.com', 'mallory@example.com', 'Bob@Example.com'], 'Subject: hi\r\n\r\nhello');
  assert.match(sent.rcpt[0]!, /^250 /);
  assert.equal(
    sent.rcpt[1],
    `550 5.1.1 <mallory@example.com>: Recipient address rejected: undeliverable address: [127.0.0.1]:${sink.port} said: 550 5.1.1 <mallory@example.com>: Recipient address rejected: User unknown in local recipient table`,
  );
  assert.match(sent.rcpt[2]!, /^250 /);
  assert.match(sent.data!, /^250 2\.0\.0 Ok: queued as /);
  await waitFor('the message at the next hop', () => sink.messages.length === 1);
  assert.deepEqual(sink.messages[0]!.to, ['alice@example.com', 'Bob@example.com'], 'only the verified recipients were queued and delivered');
  assert.deepEqual(sink.asked.slice(0, 3), ['alice@example.com', 'mallory@example.com', 'Bob@Example.com'], 'one probe per address, in RCPT order, as the sender wrote it');
  await waitFor('the queue empty', () => queued(first) === 0);
  assert.equal(sink.messages.filter((m) => m.from === '').length, 0, 'no DSN');

  // Answers are cached: the same addresses again make no probe at all, also after a restart on the same disk.
  const askedBefore = sink.asked.length;
  const again = await transaction(first.port, ['alice@example.com', 'mallory@example.com']);
  assert.match(again.rcpt[0]!, /^250 /);
  assert.match(again.rcpt[1]!, /^550 5\.1\.1 <mallory@example\.com>/);
  await first.cleanup(true);
  const restarted = await startAgent({ dataDir, routes: [route] });
  t.after(() => restarted.cleanup());
  const afterRestart = await transaction(restarted.port, ['alice@example.com', 'MALLORY@example.com']);
  assert.match(afterRestart.rcpt[0]!, /^250 /);
  assert.match(afterRestart.rcpt[1]!, /^550 5\.1\.1 <MALLORY@example\.com>: /);
  assert.equal(sink.asked.length, askedBefore, 'no probe: every answer came from verify.db');
  await restarted.cleanup(true);

  // Held (the old server frozen for the mailbox copy): no connection at all; cached answers still count, an
  // unknown address follows verify.unreachable.
  const connections = sink.connections;
  const held = await startAgent({ dataDir, routes: [{ ...route, hold: true }] });
  t.after(() => held.cleanup());
  const heldReplies = await transaction(held.port, ['alice@example.com', 'mallory@example.com', 'carol@example.com']);
  assert.match(heldReplies.rcpt[0]!, /^250 /);
  assert.match(heldReplies.rcpt[1]!, /^550 5\.1\.1 /);
  assert.match(heldReplies.rcpt[2]!, /^250 /, 'accept by default: a hold never turns real mail away');
  await held.cleanup(true);
  const strict = await startAgent({ dataDir, routes: [{ ...route, hold: true }], verify: { unreachable: 'tempfail' } });
  t.after(() => strict.cleanup());
  const strictReplies = await transaction(strict.port, ['carol@example.com']);
  assert.equal(strictReplies.rcpt[0], '450 4.1.1 <carol@example.com>: Recipient address rejected: unverified address: route example.com is held: its next hop is not asked');
  assert.equal(sink.connections, connections, 'a held next hop got no connection');
});

test('verify: probe with the next hop down: accept by default, 450 4.1.1 with tempfail; a dictionary attack neither queues nor bounces', { timeout: 60_000 }, async (t) => {
  const sink = await directory();
  const port = sink.port;
  await sink.stop();
  const route = { match: 'example.com', target: `smtp:[127.0.0.1]:${port}`, verify: 'probe' };
  const open = await startAgent({ routes: [route] });
  t.after(() => open.cleanup());
  assert.match((await transaction(open.port, ['dave@example.com'])).rcpt[0]!, /^250 /);
  const strict = await startAgent({ routes: [route], verify: { unreachable: 'tempfail' } });
  t.after(() => strict.cleanup());
  assert.match((await transaction(strict.port, ['dave@example.com'])).rcpt[0]!, /^450 4\.1\.1 <dave@example\.com>: Recipient address rejected: unverified address: \[127\.0\.0\.1\]:\d+: connect ECONNREFUSED/);

  // The next hop back; 300 random local parts in one session at the default 20 probes/s: each one is refused,
  // at once (550, probed) or for later (450, over the rate): nothing queued, nothing at the next hop.
  const back = Object.assign(new Sink(), { asked: [] as string[] });
  back.rcptPolicy = (rcpt) => (back.asked.push(rcpt), USERS.has(rcpt) ? undefined : { code: 550, message: '5.1.1 User unknown' });
  await back.start(port);
  t.after(() => back.stop());
  const attack = Array.from({ length: 300 }, (_, i) => `guess${i}x${Math.random().toString(36).slice(2, 8)}@example.com`);
  const replies = (await transaction(open.port, attack, 'Subject: spam\r\n\r\nspam')).rcpt;
  const by = (p: string) => replies.filter((r) => r.startsWith(p)).length;
  assert.equal(by('550 5.1.1 ') + by('450 4.1.1 '), 300, replies.find((r) => !/^(550 5\.1\.1|450 4\.1\.1) /.test(r)));
  assert.ok(by('550 5.1.1 ') >= 20, `${by('550 5.1.1 ')} probed`);
  assert.ok(by('450 4.1.1 ') > 0, 'over the probe rate: deferred, not accepted');
  assert.ok(back.asked.length <= 40, `the next hop was asked ${back.asked.length} times (rate limit 20/s)`);
  assert.equal(queued(open), 0);
  assert.equal(back.messages.length, 0);
});

// The verify option travels with the route: on the gRPC session and in the NATS table alike.
for (const mode of ['grpc', 'nats'] as const) {
  test(`${mode}: route set --verify probe through the controller: agents probe; route ls shows it`, { timeout: 90_000 }, async (t) => {
    const { ctl, agents } = await fleet(t, mode === 'grpc' ? grpcTransport : natsTransport(nats), { agents: ['r1'], sinks: 0, routes: () => ({}) });
    const sink = await directory();
    t.after(() => sink.stop());
    const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });
    const set = await cli('route', 'set', 'example.com', sink.target, '--verify', 'probe', '--wait', '--json');
    assert.equal(set.code, 0, set.stderr);
    assert.equal(JSON.parse(set.stdout).verify, 'probe');
    const ls = await cli('route', 'ls', '--json');
    assert.deepEqual(JSON.parse(ls.stdout).routes, [{ match: 'example.com', target: sink.target, hold: false, tls: 'may', verify: 'probe' }]);
    const replies = (await transaction(agents[0]!.port, ['alice@example.com', 'eve@example.com'])).rcpt;
    assert.match(replies[0]!, /^250 /);
    assert.match(replies[1]!, /^550 5\.1\.1 <eve@example\.com>: Recipient address rejected: undeliverable address: /);
    const bad = await cli('route', 'set', 'example.com', sink.target, '--verify', 'maybe');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--verify.*maybe|maybe.*--verify/);
  });
}
