// Ingress defences against one client holding every slot, dripping bytes, pipelining two messages and hiding a
// mail loop behind a large header: each against a real agent on loopback.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { startAgent, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

const HELD = [{ match: 'example.com', target: 'smtp:[127.0.0.1]:9', hold: true }];

/** A raw connection from `localAddress` that collects everything the server says. */
function open(port: number, localAddress = '127.0.0.1'): Promise<{ socket: Socket; text: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress });
    let text = '';
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, text: () => text, closed }));
    socket.once('error', reject);
  });
}

test('smtp.maxConnectionsPerClient: the 51st connection from one address gets 421 4.7.0; another client is greeted meanwhile', async () => {
  const a = await startAgent({ smtp: { maxConnections: 200 }, routes: HELD });
  const held: Socket[] = [];
  try {
    for (let i = 0; i < 50; i++) {
      const c = await open(a.port);
      held.push(c.socket);
      await waitFor(`greeting ${i + 1}`, () => c.text().startsWith('220 '), 10_000);
    }
    const over = await open(a.port);
    await Promise.race([over.closed, waitFor('refusal', () => over.text().includes('\r\n'), 10_000)]);
    assert.match(over.text(), /^421 4\.7\.0 Error: too many connections from 127\.0\.0\.1\r\n/);
    const other = await open(a.port, '127.0.0.2');
    held.push(other.socket);
    await waitFor('the other client is greeted', () => other.text().includes('\r\n'), 10_000);
    assert.match(other.text(), /^220 /);
    // A slot given back is free again.
    held.shift()!.destroy();
    await waitFor('slot released', async () => {
      const c = await open(a.port);
      held.push(c.socket);
      await waitFor('reply', () => c.text().includes('\r\n'), 10_000);
      return c.text().startsWith('220 ');
    }, 10_000);
  } finally {
    for (const s of held) s.destroy();
    await a.cleanup();
  }
});

test('smtp.commandTimeout: a client that drips a command one byte at a time is cut with 421 4.4.2 although it is never idle', async () => {
  const a = await startAgent({ smtp: { commandTimeout: '2s', idleTimeout: '5m' }, routes: HELD });
  const c = await open(a.port);
  try {
    await waitFor('greeting', () => c.text().startsWith('220 '), 10_000);
    const started = Date.now();
    const drip = setInterval(() => c.socket.write('N'), 200);
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 20_000))]);
    clearInterval(drip);
    const after = Date.now() - started;
    assert.match(c.text(), /\r\n421 4\.4\.2 mx\.test Error: timeout exceeded\r\n$/);
    assert.ok(after >= 1900, `cut after ${after} ms, before the 2 s command timeout`);
  } finally {
    c.socket.destroy();
    await a.cleanup();
  }
});

test('smtp.minDataRate: DATA slower than the minimum rate is cut with 421 4.4.2 and nothing is queued; a fast long message is not', async () => {
  const a = await startAgent({ smtp: { commandTimeout: '1s', minDataRate: 1000, idleTimeout: '5m' }, routes: HELD });
  try {
    const slow = await RawSmtp.open(a.port);
    await slow.command('EHLO slow.test');
    await slow.command('MAIL FROM:<s@sender.test>');
    await slow.command('RCPT TO:<u@example.com>');
    assert.match(await slow.command('DATA'), /^354/);
    const drip = setInterval(() => slow.write('0123456789'), 200); // 50 bytes/s
    const reply = await slow.reply(20_000);
    clearInterval(drip);
    assert.match(reply, /^421 4\.4\.2 /);
    assert.equal(a.agent.queue.stats().total, 0);

    // 3 s at ~20 KB/s: longer than the command timeout, well above the rate.
    const fast = await RawSmtp.open(a.port);
    await fast.command('EHLO fast.test');
    await fast.command('MAIL FROM:<s@sender.test>');
    await fast.command('RCPT TO:<u@example.com>');
    assert.match(await fast.command('DATA'), /^354/);
    fast.write('Subject: fast\r\n\r\n');
    for (let i = 0; i < 15; i++) {
      fast.write(`${'x'.repeat(4000)}\r\n`);
      await new Promise((r) => setTimeout(r, 200));
    }
    fast.write('.\r\n');
    assert.match(await fast.reply(20_000), /^250 2\.0\.0 /);
    fast.close();
    assert.equal(a.agent.queue.stats().total, 1);
  } finally {
    await a.cleanup();
  }
});

test('two pipelined transactions, NOOP and QUIT in one write: both messages are delivered and every command is answered', async () => {
  const sink = await new Sink().start();
  const a = await startAgent({ routes: [{ match: 'example.com', target: sink.target }] });
  try {
    const c = await RawSmtp.open(a.port);
    const tx = (n: number) => `MAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\nMessage-ID: <pipe-${n}@x>\r\n\r\nbody ${n}\r\n.\r\n`;
    c.write(`EHLO pipe.test\r\n${tx(1)}${tx(2)}NOOP\r\nQUIT\r\n`);
    const replies: string[] = [];
    for (let i = 0; i < 11; i++) replies.push((await c.reply(10_000)).split('\r\n').at(-1)!.slice(0, 3));
    assert.deepEqual(replies, ['250', '250', '250', '354', '250', '250', '250', '354', '250', '250', '221']);
    await waitFor('both delivered', () => sink.messages.length === 2);
  } finally {
    await a.cleanup();
    await sink.stop();
  }
});

test('the loop check counts Received headers over the whole header section, after 300 KB of other headers too', async () => {
  const a = await startAgent({ routes: HELD });
  try {
    const filler = Array.from({ length: 3000 }, (_, i) => `X-Filler-${i}: ${'f'.repeat(90)}\r\n`).join('');
    const received = (n: number) => Array.from({ length: n }, (_, i) => `Received: from hop${i}.test by x; Tue, 1 Dec 2026 00:00:00 +0000\r\n`).join('');
    const send = async (header: string) => {
      const c = await RawSmtp.open(a.port);
      await c.command('EHLO loop.test');
      await c.command('MAIL FROM:<s@sender.test>');
      await c.command('RCPT TO:<u@example.com>');
      await c.command('DATA');
      c.write(`${header}Subject: loop\r\n\r\nbody\r\n.\r\n`);
      const reply = await c.reply(10_000);
      c.close();
      return reply;
    };
    assert.ok(filler.length > 300 * 1024);
    assert.match(await send(filler + received(60)), /^554 5\.4\.6 /);
    assert.match(await send(received(30) + filler + received(30)), /^554 5\.4\.6 /);
    assert.match(await send(filler + received(49)), /^250 2\.0\.0 /, '49 Received headers are under the limit of 50');
    // A "Received:" line in the body is not a header.
    assert.match(await send(`${filler}\r\n${received(60)}`), /^250 2\.0\.0 /);
  } finally {
    await a.cleanup();
  }
});
