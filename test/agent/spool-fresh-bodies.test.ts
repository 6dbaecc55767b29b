import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { FreshBodies } from '../../agent/spool/fresh-bodies.js';
import { Spool } from '../../agent/spool/spool.js';
import { tempDir } from '../helpers/agent.js';

test('fresh bodies: taken once, bounded in bytes (the oldest go first), large bodies never kept', () => {
  const fresh = new FreshBodies(10, 6);
  const b = (n: number) => Buffer.alloc(n, 'x');
  fresh.keep('A', b(4));
  fresh.keep('B', b(4));
  fresh.keep('C', b(4));
  assert.equal(fresh.take('A'), undefined, 'the oldest went when the budget was exceeded');
  assert.equal(fresh.take('B')?.length, 4);
  assert.equal(fresh.take('B'), undefined, 'taken once');
  fresh.keep('D', b(7));
  assert.equal(fresh.take('D'), undefined, 'over the largest size kept');
  fresh.forget('C');
  assert.equal(fresh.take('C'), undefined);
});

test('spool: a message removed before its first delivery is not delivered from memory; writes after close fail', async (t) => {
  const dir = tempDir('mxs-fresh-');
  const q = new Spool(dir);
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const body = Buffer.from('Subject: fresh\r\n\r\nhi\r\n');
  await q.commit({ id: 'KEPT', sender: 's@sender.test', recipients: ['a@example.com'], body });
  await q.commit({ id: 'GONE', sender: 's@sender.test', recipients: ['b@example.com'], body });
  assert.deepEqual(await q.bulk({ kind: 'remove' }, (r) => r.msgId === 'GONE'), { recipients: 1, messages: 1 });
  assert.equal(await q.forDelivery('GONE'), undefined);
  assert.equal((await q.forDelivery('KEPT'))?.raw, body, 'the committed buffer itself, not read back');
  assert.ok(((await q.forDelivery('KEPT'))?.raw as Buffer).equals(body), 'later attempts read it from the queue');
  await q.close();
  await assert.rejects(q.commit({ id: 'LATE', sender: 's@sender.test', recipients: ['c@example.com'], body }), /closed/);
});
