import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { parseConfig, agentConfigSchema } from '../../shared/config.js';
import { silentLogger } from '../../shared/logger.js';
import { DeliveryClient, type DeliveryThreadInit } from '../../agent/delivery-client.js';
import { Sink } from '../helpers/sink.js';

const message = (n: number) => Buffer.from(`Subject: thread ${n}\r\n\r\n${'line of the body\r\n'.repeat(n)}.dot-stuffed line\r\n`);
let sink: Sink;
let init: DeliveryThreadInit;

before(async () => {
  sink = new Sink();
  await sink.start();
  init = { config: parseConfig(agentConfigSchema, { id: 'a', dataDir: '/nonexistent' }).delivery, heloName: 'agent.test', options: {}, logLevel: 'silent' };
});
after(() => sink.stop());

test('the delivery thread sends a message given as bytes and one given as a stream per attempt, byte for byte', async () => {
  const client = new DeliveryClient(init, silentLogger);
  try {
    const target = { host: '127.0.0.1', port: sink.port, mx: false };
    const bytes = await client.send(target, false, { from: 's@sender.test', to: ['a@example.com', 'b@example.com'] }, message(3));
    assert.deepEqual(bytes.results.map((r) => r.status), ['delivered', 'delivered']);
    const parts = [message(2000), message(5)];
    const streamed = await client.send(target, false, { from: 's@sender.test', to: ['c@example.com'] }, () => Readable.from(parts));
    assert.equal(streamed.results[0]!.status, 'delivered', streamed.results[0]!.reply);
    const [first, second] = sink.messages.slice(-2);
    assert.deepEqual(first!.to, ['a@example.com', 'b@example.com']);
    assert.ok(first!.data.equals(message(3)));
    assert.deepEqual(second!.to, ['c@example.com']);
    assert.ok(second!.data.equals(Buffer.concat(parts)), 'the streamed message arrives whole and unchanged');
  } finally {
    await client.close();
  }
});

test('a delivery thread that dies: every send under way gets a temporary result (the queue retries it), and the next send starts a new thread', async () => {
  const client = new DeliveryClient(init, silentLogger, new URL('../helpers/dying-delivery-thread', import.meta.url).href);
  try {
    const target = { host: '127.0.0.1', port: sink.port, mx: false };
    const before = sink.messages.length;
    for (let i = 0; i < 2; i++) {
      const attempt = await client.send(target, false, { from: 's@sender.test', to: ['a@example.com', 'b@example.com'] }, message(1));
      assert.deepEqual(attempt.results.map((r) => r.status), ['temporary', 'temporary']);
      assert.match(attempt.results[0]!.reply, /^4\.3\.0 delivery thread stopped: exited with code 7/);
    }
    assert.equal(sink.messages.length, before);
  } finally {
    await client.close();
  }
});
