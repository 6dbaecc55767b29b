import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { parseConfig, agentConfigSchema } from '../../shared/config.js';
import { silentLogger } from '../../shared/logger.js';
import { DeliveryClient, type DeliveryThreadInit } from '../../agent/delivery-client.js';
import { Sink } from '../helpers/sink.js';
import { waitFor } from '../helpers/agent.js';

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

/** A next hop that takes DATA and resets the connection after 2 MiB of it (before any reply to the data). */
async function resettingHop(): Promise<{ port: number; close: () => void }> {
  const { createServer } = await import('node:net');
  const server = createServer((s) => {
    s.on('error', () => {});
    s.write('220 reset.test ESMTP\r\n');
    let inData = false;
    let got = 0;
    let buf = '';
    s.on('data', (c: Buffer) => {
      if (inData) {
        got += c.length;
        if (got > 2 * 1024 * 1024) s.resetAndDestroy();
        return;
      }
      buf += c.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const verb = buf.slice(0, 4).toUpperCase();
        buf = buf.slice(i + 2);
        if (verb === 'EHLO') s.write('250-reset.test\r\n250 8BITMIME\r\n');
        else if (verb === 'DATA') return void ((inData = true), s.write('354 go ahead\r\n'));
        else s.write('250 ok\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { port: (server.address() as { port: number }).port, close: () => server.close() };
}

test('a streamed attempt the next hop ends mid-DATA: temporary, and the stream of stored parts is destroyed (not left open, buffered, per failed attempt)', async () => {
  const hop = await resettingHop();
  const client = new DeliveryClient(init, silentLogger);
  try {
    const made: Readable[] = [];
    const body = () => {
      let n = 0;
      const r = new Readable({ read: () => void r.push(n++ < 20 ? Buffer.alloc(1024 * 1024, 'a') : null) });
      made.push(r);
      return r;
    };
    const attempt = await client.send({ host: '127.0.0.1', port: hop.port, mx: false }, false, { from: 's@sender.test', to: ['a@example.com'] }, body);
    assert.equal(attempt.results[0]!.status, 'temporary', attempt.results[0]!.reply);
    assert.equal(made.length, 1);
    await waitFor('the stream of the failed attempt destroyed', () => made[0]!.destroyed);
  } finally {
    await client.close();
    hop.close();
  }
});

test('close() with a send still under way (past the scheduler stop bound): the send resolves temporary, never left pending', async () => {
  const { createServer } = await import('node:net');
  let sessions = 0;
  // Greets, then never answers: the send waits for its socket timeout.
  const server = createServer((s) => (sessions++, s.on('error', () => {}), s.write('220 silent.test ESMTP\r\n')));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const client = new DeliveryClient(init, silentLogger);
  try {
    const sending = client.send({ host: '127.0.0.1', port: (server.address() as { port: number }).port, mx: false }, false, { from: 's@sender.test', to: ['a@example.com'] }, message(1));
    await waitFor('the thread has the session open', () => sessions > 0);
    await client.close();
    const attempt = await sending;
    assert.deepEqual(attempt.results.map((r) => r.status), ['temporary']);
  } finally {
    server.close();
  }
});
