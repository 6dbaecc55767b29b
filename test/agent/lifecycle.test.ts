import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { messageIds, smtpClient, startAgent, tempDir, testMessage, waitFor, within } from '../helpers/agent.js';
import { deferrer } from '../helpers/controller.js';
import { CliProcess, freePort, writeYaml } from '../helpers/process.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

test('SIGHUP reloads routes: mail queued for a dead next hop goes to the new one', async (t) => {
  // LIFO cleanup registered right after each start: a failing assertion leaves no agent or sink running.
  const defer = deferrer(t);
  const dir = tempDir();
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const sink = await new Sink().start();
  defer(() => sink.stop());
  const port = await freePort();
  const dead = await freePort();
  const doc = (target: string) => ({
    id: 'hup',
    dataDir: `${dir}/data`,
    smtp: { listen: `127.0.0.1:${port}` },
    routes: [{ match: 'example.com', target }],
    retry: { intervals: ['300ms'], jitter: 0 },
    delivery: { pollInterval: '50ms' },
    log: { level: 'warn' },
  });
  const config = writeYaml(dir, 'agent.yaml', doc(`smtp:[127.0.0.1]:${dead}`));
  const agent = await new CliProcess(['agent', '--config', config], port).start();
  defer(() => agent.kill('SIGTERM'));
  const client = smtpClient(port);
  defer(() => client.close());
  await within('the agent accepts the message', client.sendMail({ envelope: { from: 's@sender.test', to: ['u@example.com'] }, raw: testMessage(41) }));
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(sink.messages.length, 0);
  writeYaml(dir, 'agent.yaml', doc(sink.target));
  agent.child!.kill('SIGHUP');
  await waitFor('delivered to the new next hop', () => sink.messages.length === 1);
  assert.deepEqual(messageIds(sink.messages.map((m) => m.data)), ['msg-41@sender.test']);
});

test('graceful shutdown: a message in DATA is finished and queued; new connections and new commands get refused', async (t) => {
  const defer = deferrer(t);
  const a = await startAgent({ smtp: { shutdownTimeout: '5s' }, routes: [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }] });
  defer(() => a.cleanup());
  const c = await RawSmtp.open(a.port);
  defer(() => c.close());
  await c.command('EHLO late.test');
  await c.command('MAIL FROM:<s@sender.test>');
  await c.command('RCPT TO:<u@example.com>');
  assert.match(await c.command('DATA'), /^354/);
  c.write('Subject: in flight\r\n\r\nfirst half\r\n');
  const stopping = a.agent.ingress.close();
  await new Promise((r) => setTimeout(r, 100));
  await assert.rejects(RawSmtp.open(a.port), /ECONNREFUSED/);
  c.write('second half\r\n.\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 Ok: queued as /);
  assert.match(await c.command('MAIL FROM:<s@sender.test>'), /^421 /);
  await within('the ingress closes (shutdownTimeout 5s)', stopping, 15_000);
  assert.equal(a.agent.queue.stats().total, 1);
});
