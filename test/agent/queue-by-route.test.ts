// Per-route queue depth (health, status, metrics) on a real queue file: counted at once for a small queue, in
// slices between which the event loop runs for a large one, with the same figures either way.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { queueByRoute } from '../../agent/health.js';
import { Spool } from '../../agent/spool/spool.js';
import { RouteTable } from '../../shared/routes.js';

test('queue by route: a queue larger than a slice is counted in slices, with the figures of one whole pass', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mxs-byroute-'));
  const q = new Spool(dir);
  t.after(async () => {
    await q.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const body = Buffer.from('Subject: x\r\n\r\nx\r\n');
  const commits: Promise<string>[] = [];
  // 160 recipients over ids 1-160: old.test is in every slice of 50, vip@new.test has an address route.
  for (let i = 0; i < 80; i++) commits.push(q.commit({ id: `M${i}`, sender: 's@sender.test', recipients: [`u${i}@old.test`, i % 4 ? `u${i}@new.test` : 'vip@new.test'], body }));
  await Promise.all(commits);
  const table = new RouteTable([
    { match: 'old.test', target: 'smtp:[127.0.0.1]:9', hold: true },
    { match: 'new.test', target: 'smtp:[127.0.0.1]:9' },
    { match: 'vip@new.test', target: 'smtp:[127.0.0.1]:10' },
  ]);
  const now = Date.now();
  const whole = queueByRoute(q, table, now, q.stats().total);
  assert.deepEqual(
    whole.map((r) => [r.match, r.queued]),
    [
      ['new.test', 60],
      ['old.test', 80],
      ['vip@new.test', 20],
    ],
  );
  // A second spool on the same file has no count yet: with slices of 50 ids it counts in the background.
  const other = new Spool(dir, { mustExist: true });
  t.after(() => other.close());
  assert.deepEqual(queueByRoute(other, table, now, 160, 50), [], 'a large queue is never counted in one blocking pass');
  let sliced: ReturnType<typeof queueByRoute> = [];
  for (let i = 0; i < 100 && !sliced.length; i++) {
    await sleep(10);
    sliced = queueByRoute(other, table, now, 160, 50);
  }
  assert.deepEqual(sliced, whole, 'the slices add up to the whole pass');
});
