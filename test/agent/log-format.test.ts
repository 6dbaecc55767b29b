// The agent's logs as an operator reads them: a real `mxswitch agent` process (static routes) relaying to a real
// STARTTLS next hop on loopback. Without log.format and not on a terminal it writes JSON lines; with
// `log.format: pretty` one readable line per record. Checked: ISO timestamps and level names, the queued line
// (client, sender, Message-ID, size), the delivery line (relay, delay, TLS version, reply), the refused line
// (client, sender) and a shutdown that waits for an open session (says so, for how long, and how it ended).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { smtpClient, tempDir, testMessage, waitFor } from '../helpers/agent.js';
import { makePki } from '../helpers/certs.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** A TLS sink, an agent process routing example.com to it, one message relayed and one recipient refused. */
async function relayOnce(t: TestContext, log: Record<string, string>) {
  const dir = tempDir('mxs-log-');
  const pki = makePki(dir);
  const sink = await new Sink({ key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) }).start();
  t.after(() => sink.stop());
  const port = await freePort();
  const config = writeYaml(dir, 'agent.yaml', {
    id: 'log-1',
    dataDir: join(dir, 'data'),
    smtp: { listen: `127.0.0.1:${port}`, hostname: 'mx.test', shutdownTimeout: '1s' },
    routes: [{ match: 'example.com', target: `smtp:[127.0.0.1]:${sink.port}` }],
    delivery: { pollInterval: '50ms', resolvers: ['127.0.0.1:9'] },
    log,
  });
  const agent = await new CliProcess(['agent', '--config', config], port).start();
  t.after(() => agent.kill());

  const client = smtpClient(port);
  await client.sendMail({ envelope: { from: 's@sender.test', to: ['u1@example.com'] }, raw: testMessage(1, 'u1@example.com') });
  await assert.rejects(client.sendMail({ envelope: { from: 's@sender.test', to: ['x@elsewhere.test'] }, raw: testMessage(2, 'x@elsewhere.test') }), /550 5\.7\.1/);
  client.close();
  await waitFor('the message at the sink', () => sink.messages.length === 1);
  assert.equal(sink.messages[0]!.tls, true, 'the sink was reached over STARTTLS');

  // A client that stays connected: the shutdown waits for it, then closes it with 421 after shutdownTimeout.
  const idle = await RawSmtp.open(port);
  assert.match(await idle.command('EHLO idle.test'), /^250/);
  await agent.kill('SIGTERM');
  idle.close();
  return { output: agent.output, sinkPort: sink.port };
}

test('log.format unset and not on a terminal: JSON lines with ISO time and level names; queued, delivered, refused and shutdown lines carry what an operator looks for', async (t) => {
  const { output, sinkPort } = await relayOnce(t, { level: 'info' });
  const records = output
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const r of records) {
    assert.match(String(r.time), ISO, JSON.stringify(r));
    assert.ok(['info', 'warn', 'error'].includes(String(r.level)), JSON.stringify(r));
  }
  const one = (msg: string) => {
    const found = records.filter((r) => r.msg === msg);
    assert.equal(found.length, 1, `one "${msg}" line in:\n${output}`);
    return found[0]!;
  };
  const queued = one('queued');
  assert.deepEqual(
    { client: queued.client, from: queued.from, messageId: queued.messageId, rcpts: queued.rcpts, agent: queued.agent, sized: typeof queued.size === 'number' && (queued.size as number) > 100 },
    { client: '127.0.0.1', from: 's@sender.test', messageId: '<msg-1@sender.test>', rcpts: 1, agent: 'log-1', sized: true },
  );
  const delivered = one('delivered');
  assert.equal(delivered.queueId, queued.queueId);
  assert.equal(delivered.to, 'u1@example.com');
  assert.equal(delivered.relay, `[127.0.0.1]:${sinkPort}`);
  assert.equal(delivered.tls, 'TLSv1.3');
  assert.equal(typeof delivered.delay, 'number');
  assert.match(String(delivered.reply), /^250 /);
  const refused = one('recipient refused');
  assert.deepEqual({ client: refused.client, from: refused.from, rcpt: refused.rcpt, why: refused.why }, { client: '127.0.0.1', from: 's@sender.test', rcpt: 'x@elsewhere.test', why: 'no route' });
  const waiting = one('waiting up to 1.0s for 1 open SMTP session to finish');
  assert.deepEqual({ sessions: waiting.sessions, clients: waiting.clients, waitMs: waiting.waitMs }, { sessions: 1, clients: ['127.0.0.1'], waitMs: 1000 });
  const cut = one('SMTP sessions still open after 1.0s were closed with 421');
  assert.equal(cut.level, 'warn');
  assert.ok((cut.tookMs as number) >= 1000);
});

test('log.format: pretty: one readable line per record (time, LEVEL, agent, message, key=value)', async (t) => {
  const { output, sinkPort } = await relayOnce(t, { level: 'info', format: 'pretty' });
  const lines = output.split('\n').filter((l) => l.trim() !== '');
  const line = (re: RegExp) => {
    const found = lines.filter((l) => re.test(l));
    assert.equal(found.length, 1, `one line like ${re} in:\n${output}`);
    return found[0]!;
  };
  const T = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z';
  line(new RegExp(`^${T} INFO  agent log-1: queued queueId=\\S+ client=127\\.0\\.0\\.1 from=s@sender\\.test messageId=<msg-1@sender\\.test> size=\\d+ rcpts=1$`));
  line(new RegExp(`^${T} INFO  agent log-1: delivered queueId=\\S+ to=u1@example\\.com relay=\\[127\\.0\\.0\\.1\\]:${sinkPort} delay=[\\d.]+ tls=TLSv1\\.3 reply="250 `));
  line(new RegExp(`^${T} INFO  agent log-1: recipient refused client=127\\.0\\.0\\.1 from=s@sender\\.test rcpt=x@elsewhere\\.test why="no route"$`));
  line(new RegExp(`^${T} INFO  agent log-1: waiting up to 1\\.0s for 1 open SMTP session to finish sessions=1 clients=\\["127\\.0\\.0\\.1"\\] waitMs=1000$`));
  line(new RegExp(`^${T} WARN  agent log-1: SMTP sessions still open after 1\\.0s were closed with 421 tookMs=\\d+$`));
  assert.ok(lines.every((l) => new RegExp(`^${T} (INFO |WARN |ERROR|DEBUG|FATAL|TRACE) agent log-1: `).test(l) || /^ {4}/.test(l)), output);
});
