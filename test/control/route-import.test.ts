// `mxswitch route import` through the real CLI against a real controller (SQLite) and two in-process agents on
// the real gRPC control channel: a file with a bad line (found by the CLI, or by the controller) changes nothing anywhere; a good file of 20,000 routes is
// ONE table version that every agent applies; --replace removes what the file does not list; --dry-run only counts.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Route } from '../../shared/routes.js';
import { tempDir, waitFor } from '../helpers/agent.js';
import { ADMIN_TOKEN, adminApi, deferrer, startController, startFleetAgent } from '../helpers/controller.js';
import { runCli } from '../helpers/process.js';

const T = (n: number) => `smtp:[192.0.2.${n}]:25`;
const sorted = (routes: readonly Route[]) => [...routes].map((r) => `${r.match} ${r.target}${r.hold ? ' hold' : ''}`).sort();

test('route import: a bad line changes nothing; 20,000 routes in one version applied by every agent; --replace; --dry-run', async (t) => {
  const defer = deferrer(t);
  const ctl = await startController();
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  await api.setRoute('example.com', T(1));
  await api.setRoute('held.example', T(1), { hold: true });
  const agents = [await startFleetAgent(ctl.address, 'i1'), await startFleetAgent(ctl.address, 'i2')];
  for (const a of agents) defer(() => a.cleanup());
  const converged = async (what: string) => {
    await waitFor(what, () => agents.every((a) => a.agent.router.table.version === ctl.controller.store.version), 60_000);
    for (const a of agents) assert.deepEqual(sorted(a.agent.router.table.routes), sorted(ctl.controller.store.snapshot().routes));
  };
  await converged('first table');
  const dir = tempDir('mxs-import-');
  const file = (name: string, lines: readonly string[]) => {
    const path = join(dir, name);
    writeFileSync(path, `${lines.join('\n')}\n`);
    return path;
  };
  const cli = (...args: string[]) => runCli(['route', 'import', ...args], { MXSWITCH_CONTROLLER: ctl.address, MXSWITCH_TOKEN: ADMIN_TOKEN }, 120_000);
  const mailboxes = Array.from({ length: 20_000 }, (_, i) => `u${i}@example.com  ${T(2 + (i % 3))}`);

  // A bad line among 20,000: exit 2, one line naming it, nothing sent (the version and both agents unchanged).
  const before = ctl.controller.store.version;
  const audited = (await ctl.controller.store.audit()).length;
  const bad = await cli(file('bad.map', ['# moved mailboxes', ...mailboxes.slice(0, 12_345), 'u0@example.net smtp:[192.0.2.9]:0', ...mailboxes.slice(12_345)]));
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /^mxswitch: .*bad\.map: line 12347: .*port.*; nothing was imported\n$/);
  assert.equal(bad.stdout, '');
  const twice = await cli(file('twice.map', [...mailboxes.slice(0, 5), mailboxes[2]!]));
  assert.equal(twice.code, 2);
  assert.match(twice.stderr, /^mxswitch: .*line 6: "u2@example\.com" is on line 3 too; nothing was imported\n$/);
  // A line only the controller can refuse (an agent's own SMTP listener: a loop): sent, refused, nothing applied.
  const loop = await cli(file('loop.map', [...mailboxes.slice(0, 15_000), `loop.example smtp:[127.0.0.1]:${agents[0]!.port}`]));
  assert.equal(loop.code, 2, loop.stderr);
  assert.match(loop.stderr, /^mxswitch: .*is agent i1's own SMTP listener.*\n$/);
  assert.equal(ctl.controller.store.version, before);
  assert.equal(ctl.controller.store.snapshot().routes.length, 2);
  assert.equal((await ctl.controller.store.audit()).length, audited);
  for (const a of agents) assert.deepEqual(sorted(a.agent.router.table.routes), ['example.com smtp:[192.0.2.1]:25', 'held.example smtp:[192.0.2.1]:25 hold']);
  for (const a of agents) assert.equal(a.agent.router.table.version, before);

  // --dry-run: the counts, nothing stored.
  const good = file('good.map', ['held.example smtp:[192.0.2.7]:25', ...mailboxes]);
  const dry = await cli(good, '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, new RegExp(`dry run: nothing changed \\(the table stays at version ${before}\\); the import would make: 20000 added, 1 changed, 0 removed, 0 unchanged\\n$`));
  assert.equal(ctl.controller.store.version, before);
  assert.equal(ctl.controller.store.snapshot().routes.length, 2);

  // The good file: one version, applied by both agents (--wait), the hold kept on the re-targeted route.
  const done = await cli(good, '--wait', '--json');
  assert.equal(done.code, 0, done.stderr);
  const lines = done.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(new Set(lines.slice(0, -1).map((l) => l.type)), new Set(['progress']));
  assert.deepEqual(lines.at(-1), { type: 'result', ok: true, routes: 20_001, replace: false, dryRun: false, version: before + 1, added: 20_000, changed: 1, removed: 0, unchanged: 0, appliedBy: ['i1', 'i2'] });
  assert.equal(ctl.controller.store.version, before + 1, 'one version for the whole file');
  await converged('the import applied');
  for (const a of agents) {
    assert.equal(a.agent.router.table.routes.length, 20_002);
    assert.equal(a.agent.router.table.lookup('u19999@example.com')?.target, T(2 + (19_999 % 3)));
    assert.deepEqual(a.agent.router.table.get('held.example'), { match: 'held.example', target: 'smtp:[192.0.2.7]:25', hold: true });
  }

  // --replace: the table becomes the file (example.com and the mailboxes not listed go), again one version.
  const replaced = await cli(file('replace.map', ['held.example smtp:[192.0.2.7]:25', ...mailboxes.slice(0, 100)]), '--replace', '--wait');
  assert.equal(replaced.code, 0, replaced.stderr);
  assert.match(replaced.stdout, new RegExp(`101 routes imported: 0 added, 0 changed, 19901 removed, 101 unchanged: table version ${before + 2}, applied by i1, i2\\n$`));
  assert.equal(ctl.controller.store.version, before + 2);
  await converged('the replace applied');
  for (const a of agents) {
    assert.equal(a.agent.router.table.routes.length, 101);
    assert.equal(a.agent.router.table.lookup('bob@example.com'), undefined);
  }
});
