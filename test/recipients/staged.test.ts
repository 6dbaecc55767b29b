// Staged migration: `switchover --recipients FILE` moves listed mailboxes only, under traffic, with real processes
// for the CLI and real agents, controller (SQLite, gRPC) and next hops in this one.
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { smtpClient, tempDir, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN } from '../helpers/controller.js';
import { fleet } from '../helpers/fleet.js';
import type { Received } from '../helpers/sink.js';
import { grpcTransport } from '../helpers/transport.js';
import { runCli } from '../cli/run-cli.js';

const MOVED = Array.from({ length: 50 }, (_, i) => `pilot${i}@example.com`);
const STAYING = Array.from({ length: 50 }, (_, i) => `staff${i}@example.com`);

/** Every (message, recipient) pair a sink received, as "n:rcpt". */
const pairs = (messages: readonly Received[]) =>
  messages.flatMap((m) => {
    const n = /^Subject: staged (\d+)/m.exec(m.data.toString('latin1'))?.[1] ?? '?';
    return m.to.map((rcpt) => `${n}:${rcpt}`);
  });

test('switchover --recipients: 50 mailboxes move to the new server under traffic on 3 agents; the rest of the domain stays; split messages reach both once', { timeout: 180_000 }, async (t) => {
  const { ctl, agents, sinks } = await fleet(t, grpcTransport, { agents: ['s1', 's2', 's3'], sinks: 2, routes: ([old]) => ({ 'example.com': old!.target }) });
  const [oldSink, newSink] = sinks as [typeof sinks[0], typeof sinks[0]];
  const cli = (...args: string[]) => runCli(args, { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN });
  const dir = tempDir('mxs-staged-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  // Bad files change nothing.
  const bad = join(dir, 'bad.txt');
  writeFileSync(bad, 'pilot0@example.com\nnot an address\n');
  const refused = await cli('switchover', '--recipients', bad, '--to', newSink.target);
  assert.equal(refused.code, 2);
  assert.equal(refused.stderr.trim(), `mxswitch: ${bad}: line 2: "not an address" is not an address (spaces, control characters or <>); nothing was changed`);
  assert.equal((await cli('switchover', 'example.com', '--recipients', bad, '--to', newSink.target)).code, 2, 'MATCH and --recipients together');
  const versionBefore = ctl.controller.store.version;

  // Traffic through all three agents: messages to a moving and a staying mailbox (split) and to one of each alone.
  const clients = agents.map((a) => smtpClient(a.port, { pool: true, maxConnections: 2 }));
  t.after(() => clients.forEach((c) => c.close()));
  const expected: string[] = [];
  let n = 0;
  const send = async () => {
    const i = n++;
    const to = i % 3 === 0 ? [MOVED[i % 50]!, STAYING[i % 50]!] : i % 3 === 1 ? [MOVED[i % 50]!] : [STAYING[i % 50]!];
    await clients[i % clients.length]!.sendMail({ envelope: { from: 'sender@sender.test', to }, raw: `From: sender@sender.test\r\nSubject: staged ${i}\r\n\r\nbody ${i}\r\n` });
    for (const r of to) expected.push(`${i}:${r}`);
  };
  let stop = false;
  const traffic = (async () => {
    while (!stop && n < 2000) await send();
  })();

  const file = join(dir, 'pilot.txt');
  writeFileSync(file, `# the pilot group\n${MOVED.map((a, i) => (i === 0 ? a.toUpperCase() : a)).join('\n')}\n`);
  const sw = await cli('switchover', '--recipients', file, '--to', newSink.target, '--wait-drained', '--json');
  assert.equal(sw.code, 0, sw.stderr);
  const ops = sw.stdout.trim().split('\n').map((l) => JSON.parse(l) as { operation: { state: string; recipients: string[]; step: string } });
  const final = ops.at(-1)!.operation;
  assert.equal(final.state, 'done');
  assert.deepEqual(final.recipients, [...MOVED].sort());
  // One table version per step for all 50 mailboxes (hold, re-point, release), not one per mailbox.
  assert.equal(ctl.controller.store.version, versionBefore + 3);
  const audit = (await ctl.controller.store.audit(1000)).filter((r) => r.version > versionBefore);
  assert.deepEqual([...new Set(audit.map((r) => `${r.version} ${r.action}`))].sort(), [`${versionBefore + 1} set`, `${versionBefore + 2} set`, `${versionBefore + 3} release`]);
  assert.equal(audit.length, 150, 'one audit record per mailbox and step');

  // After the switchover: a last round of split messages, then stop and let every queue empty.
  const afterFrom = n;
  stop = true;
  await traffic;
  for (let k = 0; k < 30; k++) await send();
  await waitFor('every queue empty', () => agents.every((a) => a.agent.queue.inspect.counts().recipients === 0), 60_000);
  await waitFor('all mail delivered', () => pairs(oldSink.messages).length + pairs(newSink.messages).length >= expected.length, 30_000);

  const atOld = pairs(oldSink.messages);
  const atNew = pairs(newSink.messages);
  t.diagnostic(`${n} messages, ${expected.length} recipients: ${atOld.length} at old, ${atNew.length} at new`);
  assert.deepEqual([...atOld, ...atNew].sort(), [...expected].sort(), 'every recipient of every message exactly once, nothing lost');
  const rcptOf = (p: string) => p.slice(p.indexOf(':') + 1);
  const numOf = (p: string) => Number(p.slice(0, p.indexOf(':')));
  assert.deepEqual(atNew.filter((p) => !MOVED.includes(rcptOf(p))), [], 'no staying mailbox reached the new server');
  assert.deepEqual(atOld.filter((p) => MOVED.includes(rcptOf(p)) && numOf(p) >= afterFrom), [], 'after the switchover no moved mailbox reaches the old server');
  const split = [...Array(n - afterFrom).keys()].map((k) => k + afterFrom).filter((i) => i % 3 === 0);
  assert.ok(split.length >= 10);
  for (const i of split) {
    assert.deepEqual(atNew.filter((p) => numOf(p) === i), [`${i}:${MOVED[i % 50]}`], `message ${i}: its moved recipient at new`);
    assert.deepEqual(atOld.filter((p) => numOf(p) === i), [`${i}:${STAYING[i % 50]}`], `message ${i}: its staying recipient at old`);
  }

  // The table: one released address route per moved mailbox, the domain route untouched; route ls groups them.
  const ls = JSON.parse((await cli('route', 'ls', '--json')).stdout) as { routes: { match: string; target: string; hold: boolean }[] };
  assert.deepEqual(ls.routes.find((r) => r.match === 'example.com'), { match: 'example.com', target: oldSink.target, hold: false, tls: 'may', verify: 'none' });
  const addressRoutes = ls.routes.filter((r) => r.match.includes('@'));
  assert.deepEqual(addressRoutes.map((r) => r.match).sort(), [...MOVED].sort());
  assert.ok(addressRoutes.every((r) => r.target === newSink.target && !r.hold));
  const human = (await cli('route', 'ls')).stdout.split('\n');
  assert.match(human[2]!, new RegExp(`^example\\.com\\s+smtp:\\[127\\.0\\.0\\.1\\]:${oldSink.port}\\s+-\\s+may\\s+none$`));
  assert.match(human[3]!, new RegExp(`^  \\*@example\\.com \\(50 addresses\\)\\s+smtp:\\[127\\.0\\.0\\.1\\]:${newSink.port}\\s+-`));
  assert.equal(human.filter((l) => l.includes('@')).length, 1, 'folded into one line');
  assert.equal((await cli('route', 'ls', '--addresses')).stdout.split('\n').filter((l) => /^pilot\d+@example\.com /.test(l)).length, 50);
});
