import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { PART_BYTES, Spool } from '../../agent/spool/spool.js';
import { smtpClient, startAgent, tempDir, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of stream) out.push(c as Buffer);
  return Buffer.concat(out);
}

test('queue: a large message is stored in parts, read back whole or streamed, and its parts leave with it', async () => {
  const dir = tempDir('mxs-parts-');
  const q = new Spool(dir);
  try {
    const header = Buffer.from('Subject: big\r\n\r\n');
    const pieces = [header, ...Array.from({ length: 70 }, (_, i) => Buffer.alloc(64 * 1024 - 7, String.fromCharCode(97 + (i % 26))))];
    const whole = Buffer.concat(pieces);
    assert.ok(whole.length > 4 * PART_BYTES);
    await q.commit({ id: 'BIG1', sender: 's@sender.test', recipients: ['a@example.com', 'b@example.com'], body: pieces });
    await q.commit({ id: 'SMALL1', sender: 's@sender.test', recipients: ['c@example.com'], body: [Buffer.from('Subject: small\r\n\r\n'), Buffer.from('hi\r\n')] });
    const parts = () => q.inspect.counts('BIG1').bodyParts;
    assert.ok(parts() >= 4 && parts() <= Math.ceil(whole.length / PART_BYTES), `${parts()} parts`);
    assert.equal(q.inspect.counts('SMALL1').bodyParts, 0);
    assert.ok(q.body('BIG1')!.equals(whole));
    assert.equal(q.message('BIG1')!.size, whole.length);
    assert.equal(q.body('SMALL1')!.toString(), 'Subject: small\r\n\r\nhi\r\n');

    const d = (await q.forDelivery('BIG1'))!;
    assert.equal(typeof d.raw, 'function');
    const make = d.raw as () => Readable;
    assert.ok((await readAll(make())).equals(whole));
    assert.ok((await readAll(make())).equals(whole), 'a second attempt streams the message again');
    assert.equal(d.head.subarray(0, header.length).toString('latin1'), header.toString('latin1'));
    assert.ok(Buffer.isBuffer((await q.forDelivery('SMALL1'))!.raw));

    // Removed while a stream is open: the stream fails rather than ending early (no truncated message).
    const open = make();
    await new Promise((resolve) => open.once('readable', resolve));
    const first = open.read() as Buffer;
    assert.ok(first.length >= PART_BYTES && first.length < whole.length, 'the stream has read some parts, not all');
    const rows = (await q.claimDue(Date.now() + 1000, 10)).filter((r) => r.msgId === 'BIG1');
    assert.equal(rows.length, 2);
    await q.record(rows.map((row) => ({ row, route: 'example.com', outcome: { kind: 'delivered' as const, reply: '250 ok' } })));
    assert.equal(q.message('BIG1'), undefined);
    assert.equal(parts(), 0);
    await assert.rejects(readAll(open), /lost its part/);

    await q.commit({ id: 'BIG2', sender: 's@sender.test', recipients: ['a@example.com'], body: pieces });
    assert.deepEqual(await q.bulk({ kind: 'remove' }, () => true, { msgId: 'BIG2' }), { recipients: 1, messages: 1 });
    assert.equal(q.inspect.counts().bodyParts, 0);
  } finally {
    await q.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('relay: a large message is received in parts, relayed byte for byte, and leaves no parts behind', async () => {
  const sink = await new Sink().start();
  const a = await startAgent({ routes: [{ match: 'example.com', target: sink.target }] });
  try {
    const line = `${'y'.repeat(70)}\r\n`;
    const raw = Buffer.from(`From: s@sender.test\r\nTo: a@example.com\r\nSubject: large\r\nMessage-ID: <large-1@sender.test>\r\n\r\n.dot line\r\n${line.repeat(60_000)}end\r\n`);
    assert.ok(raw.length > 3 * PART_BYTES);
    const client = smtpClient(a.port);
    await client.sendMail({ envelope: { from: 's@sender.test', to: ['a@example.com'] }, raw });
    client.close();
    await waitFor('relayed', () => sink.messages.length === 1);
    const got = sink.messages[0]!.data;
    // Our Received header, then the message exactly as sent (the dot line was stuffed and unstuffed on the way).
    assert.match(got.subarray(0, 200).toString('latin1'), /^Received: from /);
    assert.ok(got.subarray(got.length - raw.length).equals(raw));
    await waitFor('queue empty', () => a.agent.queue.stats().total === 0);
    assert.equal(a.agent.queue.inspect.counts().bodyParts, 0);

    // A client that goes away in the middle of a large DATA leaves nothing behind either.
    const s = await RawSmtp.open(a.port);
    await s.command('EHLO x.test');
    await s.command('MAIL FROM:<s@sender.test>');
    await s.command('RCPT TO:<a@example.com>');
    await s.command('DATA');
    s.write(Buffer.from(`Subject: cut\r\n\r\n${line.repeat(40_000)}`));
    await waitFor('parts staged', () => a.agent.queue.inspect.counts().bodyParts > 0);
    s.close();
    await waitFor('parts dropped', () => a.agent.queue.inspect.counts().bodyParts === 0);
    assert.equal(a.agent.queue.stats().total, 0);
  } finally {
    await a.cleanup();
    await sink.stop();
  }
});
