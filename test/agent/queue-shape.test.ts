// qshape on a real queue file: recipients by domain and by message age, in qshape's doubling minute buckets.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { mergeShapes, queueShape } from '../../agent/queue-shape.js';
import { Spool } from '../../agent/spool/spool.js';

test('queue shape: each recipient in the bucket of its message age, per domain, largest domain first; shapes add up', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mxs-shape-'));
  const q = new Spool(dir);
  t.after(async () => {
    await q.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const body = Buffer.from('Subject: s\r\n\r\nhi\r\n');
  await q.commit({ id: 'M1', sender: 's@sender.test', recipients: ['a@b.example', 'c@B.example', 'd@a.example'], body });
  await q.commit({ id: 'M2', sender: '', recipients: ['e@b.example'], body });
  const arrived = q.message('M1')!.arrivedAt;

  const young = queueShape(q, {}, arrived + 4 * 60_000);
  assert.deepEqual(young.bucketsMinutes, [5, 10, 20, 40, 80, 160, 320, 640, 1280]);
  assert.deepEqual(young.rows, [
    { domain: 'b.example', total: 3, counts: [3, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
    { domain: 'a.example', total: 1, counts: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
  ]);
  // 7 minutes old is in the 10 column; two days is past the last bound.
  assert.deepEqual(queueShape(q, {}, arrived + 7 * 60_000).rows[0]!.counts, [0, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(queueShape(q, {}, arrived + 2 * 86_400_000).rows[1]!.counts, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  // The selection narrows it (bounces only), and shapes of two agents add up by domain.
  const bounces = queueShape(q, { sender: '' }, arrived);
  assert.deepEqual(bounces.rows.map((r) => [r.domain, r.total]), [['b.example', 1]]);
  assert.deepEqual(mergeShapes([young, bounces]).rows.map((r) => [r.domain, r.total, r.counts[0]]), [['b.example', 4, 4], ['a.example', 1, 1]]);
});
