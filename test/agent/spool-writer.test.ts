import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { QueueStorageError, Spool } from '../../agent/spool/spool.js';
import { startAgent, tempDir, waitFor } from '../helpers/agent.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { Sink } from '../helpers/sink.js';

/** One session up to the end of its data, without reading the reply to the final dot. */
async function sendData(c: RawSmtp, n: number): Promise<void> {
  for (const line of ['EHLO client.test', 'MAIL FROM:<s@sender.test>', `RCPT TO:<u${n}@example.com>`]) assert.match(await c.command(line), /^250[ -]/, line);
  assert.match(await c.command('DATA'), /^354 /);
  c.write(`Message-ID: <writer-${n}@sender.test>\r\nSubject: ${n}\r\n\r\nbody ${n}\r\n.\r\n`);
}

test('spool: a commit waiting in the writer thread does not stall SMTP; its 250 comes once it is on disk', async (t) => {
  const sink = await new Sink().start();
  const a = await startAgent({ routes: [{ match: 'example.com', target: sink.target }] });
  t.after(async () => {
    await a.cleanup();
    await sink.stop();
  });
  // While the lock is held no write can commit (as with an fsync that takes its time); the writer thread waits
  // on it (the agent's busy timeout is 5 s, far more than the few loopback round trips below).
  const release = a.agent.queue.inspect.holdWriteLock();
  let released = false;
  t.after(() => (released ? undefined : release()));
  const first = await RawSmtp.open(a.port);
  await sendData(first, 1);
  // The event loop answers a new session from its greeting to the end of its data meanwhile.
  const second = await RawSmtp.open(a.port);
  await sendData(second, 2);
  // No 250 while the commit cannot have reached the disk.
  assert.equal(await first.reply(0), '(timeout)');
  release();
  released = true;
  assert.match(await first.reply(), /^250 2\.0\.0 Ok: queued as /);
  assert.match(await second.reply(), /^250 2\.0\.0 Ok: queued as /);
  first.close();
  second.close();
  await waitFor('both delivered', () => sink.messages.length === 2);
});

test('spool: the writer thread gets copies (the caller keeps its buffers); writes in flight when it dies are rejected, the next write starts a new one', async (t) => {
  const dir = tempDir('mxs-writer-');
  const q = new Spool(dir);
  t.after(async () => {
    await q.close();
    rmSync(dir, { recursive: true, force: true });
  });
  // A small Buffer is a slice of Node's shared pool: stored as its own bytes, and still usable by the caller.
  const small = Buffer.from('Subject: pooled\r\n\r\nsmall\r\n');
  const id = await q.commit({ id: 'POOLED', sender: 's@sender.test', recipients: ['a@example.com'], body: small });
  assert.equal(small.toString(), 'Subject: pooled\r\n\r\nsmall\r\n');
  assert.ok(q.body(id)!.equals(small));
  await q.commit({ id: 'AGAIN', sender: 's@sender.test', recipients: ['b@example.com'], body: small });
  assert.ok(q.body('AGAIN')!.equals(small));

  // No hook for this in the spool: a writer thread that dies on its own is a bug or the process running out of memory.
  const writer = (q as unknown as { writer: { worker: Worker | undefined } }).writer;
  void writer.worker!.terminate();
  const lost = q.commit({ id: 'LOST', sender: 's@sender.test', recipients: ['c@example.com'], body: small });
  await assert.rejects(lost, (err) => err instanceof QueueStorageError && !err.full && /writer thread stopped/.test(err.message));
  assert.equal(q.message('LOST'), undefined);
  await q.commit({ id: 'AFTER', sender: 's@sender.test', recipients: ['d@example.com'], body: small });
  assert.deepEqual(q.allRecipients().map((r) => r.msgId), ['POOLED', 'AGAIN', 'AFTER']);
});
