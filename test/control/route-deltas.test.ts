import assert from 'node:assert/strict';
import { appendFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { RouteStore } from '../../control/adapters/sqlite/route-store.js';
import type { Route } from '../../shared/routes.js';
import { breakRoutePersistence, waitFor } from '../helpers/agent.js';
import { adminApi, deferrer, startController, startFleetAgent, type TestController } from '../helpers/controller.js';

/**
 * Route deltas over the real gRPC session: a controller on SQLite and in-process agents with their real control
 * channel and data directories. What reached an agent is read where it lands: its table in force and its files
 * (routes.json: the last snapshot, routes.journal: one line per delta applied since).
 */

const T = (n: number) => `smtp:[192.0.2.${n}]:25`;
const sorted = (routes: readonly Route[]) => [...routes].sort((a, b) => a.match.localeCompare(b.match));

function files(dataDir: string): { snapshot: number; journal: { version: number; baseVersion: number; snapshot: boolean }[] } {
  const snapshot = (JSON.parse(readFileSync(join(dataDir, 'routes.json'), 'utf8')) as { version: number }).version;
  const file = join(dataDir, 'routes.journal');
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const journal = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { version: number; baseVersion: number; snapshot: boolean });
  return { snapshot, journal };
}

const store = (ctl: TestController) => ctl.controller.store as RouteStore;

async function setup(t: Parameters<typeof deferrer>[0], tuning: { tombstoneVersions?: number } = {}) {
  const defer = deferrer(t);
  const ctl = await startController({}, tuning);
  defer(() => ctl.cleanup());
  const api = adminApi(ctl.address);
  defer(() => api.close());
  return { ctl, api, defer };
}

/** Same table on the agent as on the controller, at the controller's version. */
async function converged(ctl: TestController, agent: { agent: { router: { table: { version: number; routes: readonly Route[] } } } }, what: string) {
  await waitFor(what, () => agent.agent.router.table.version === ctl.controller.store.version, 30_000);
  assert.deepEqual(sorted(agent.agent.router.table.routes), sorted(ctl.controller.store.snapshot().routes));
}

test('a fresh agent gets a snapshot, then each change as a delta: one journal line, routes.json untouched', async (t) => {
  const { ctl, api, defer } = await setup(t);
  for (let i = 0; i < 50; i++) await api.setRoute(`d${i}.example`, T(1));
  const a = await startFleetAgent(ctl.address, 'fresh');
  defer(() => a.cleanup());
  await converged(ctl, a, 'snapshot applied');
  assert.equal(files(a.config.dataDir).snapshot, 50);
  await api.setRoute('d7.example', T(2), { hold: true });
  await api.removeRoute('d8.example');
  await api.setRoute('alice@d9.example', T(3));
  await converged(ctl, a, 'three deltas applied');
  const f = files(a.config.dataDir);
  assert.equal(f.snapshot, 50, 'no rewrite of the table per change');
  assert.deepEqual(f.journal.map((e) => [e.baseVersion, e.version, e.snapshot]), [
    [50, 51, false],
    [51, 52, false],
    [52, 53, false],
  ]);
  assert.equal(a.agent.router.table.get('d7.example')?.hold, true);
  assert.equal(a.agent.router.table.get('d8.example'), undefined);
  assert.equal(a.agent.router.table.lookup('alice@d9.example')?.target, T(3));
  assert.equal(a.agent.router.table.lookup('bob@d9.example')?.target, T(1));
  // A restart finds the same table (snapshot + journal), before and without the controller.
  await a.cleanup(true);
  const again = await startFleetAgent('127.0.0.1:9', 'fresh', { dataDir: a.config.dataDir });
  defer(() => again.cleanup());
  assert.equal(again.agent.router.table.version, 53);
  assert.deepEqual(sorted(again.agent.router.table.routes), sorted(ctl.controller.store.snapshot().routes));
});

test('an agent away for 1,000 versions gets one delta with what changed (removals too); beyond the tombstones kept, a snapshot', async (t) => {
  const { ctl, api, defer } = await setup(t, { tombstoneVersions: 1500 });
  for (let i = 0; i < 20; i++) await api.setRoute(`d${i}.example`, T(1));
  const a = await startFleetAgent(ctl.address, 'away');
  defer(() => a.cleanup());
  await converged(ctl, a, 'first table');
  await a.cleanup(true);
  // 1,000 versions while it is away: 998 new address routes, one changed route, one removal.
  const s = store(ctl);
  for (let i = 0; i < 998; i++) s.set({ match: `u${i}@d1.example`, target: T(2) }, { actor: 'test' });
  s.set({ match: 'd2.example', target: T(3) }, { actor: 'test' });
  s.remove('d3.example', { actor: 'test' });
  assert.equal(s.version, 1020);
  const back = await startFleetAgent(ctl.address, 'away', { dataDir: a.config.dataDir });
  defer(() => back.cleanup());
  await converged(ctl, back, 'caught up');
  const f = files(back.config.dataDir);
  assert.equal(f.snapshot, 20, 'a delta, not the table');
  assert.deepEqual(f.journal.map((e) => [e.baseVersion, e.version, e.snapshot]), [[20, 1020, false]]);
  assert.equal(back.agent.router.table.get('d3.example'), undefined, 'the removal reached it');
  assert.equal(back.agent.router.table.size, 20 + 998 - 1);

  // Away again, now for longer than the controller keeps removals: a snapshot replaces its table.
  await back.cleanup(true);
  s.remove('d4.example', { actor: 'test' });
  for (let i = 0; i < 2000; i++) s.set({ match: `v${i % 50}@d5.example`, target: T(10 + (i % 7)) }, { actor: 'test' });
  const last = await startFleetAgent(ctl.address, 'away', { dataDir: a.config.dataDir });
  defer(() => last.cleanup());
  await converged(ctl, last, 'caught up by snapshot');
  assert.equal(files(last.config.dataDir).snapshot, s.version, 'routes.json rewritten at the current version');
  assert.equal(last.agent.router.table.get('d4.example'), undefined);
});

test('a nack in the middle of a delta stream keeps the agent table; the next change reaches it as a snapshot', async (t) => {
  const { ctl, api, defer } = await setup(t);
  await api.setRoute('a.example', T(1));
  const good = await startFleetAgent(ctl.address, 'good');
  const bad = await startFleetAgent(ctl.address, 'bad');
  defer(() => Promise.all([good.cleanup(), bad.cleanup()]));
  await converged(ctl, bad, 'bad on v1');
  await api.setRoute('b.example', T(2));
  await converged(ctl, bad, 'bad on v2 (a delta)');
  // It cannot append to its journal: the delta to v3 is refused (EISDIR).
  breakRoutePersistence(bad.config.dataDir);
  await api.setRoute('c.example', T(3));
  await converged(ctl, good, 'good on v3');
  await waitFor('bad refused v3', async () => /version 3 refused: .*EISDIR/.test((await api.status()).agents.find((x) => x.id === 'bad')?.lastError ?? ''));
  assert.equal((await api.status()).agents.find((x) => x.id === 'bad')!.appliedVersion, 2);
  assert.equal(bad.agent.router.table.version, 2, 'the previous table stays in force');
  assert.equal(bad.agent.router.table.get('c.example'), undefined, 'nothing of a refused update');
  // The next change goes to it whole (a snapshot: routes.json, not the journal), with what it missed.
  await api.setRoute('a.example', T(4));
  await converged(ctl, bad, 'bad on v4');
  assert.equal((JSON.parse(readFileSync(join(bad.config.dataDir, 'routes.json'), 'utf8')) as { version: number }).version, 4, 'it came as a snapshot');
  assert.equal(bad.agent.router.table.get('c.example')?.target, T(3));
  assert.equal((await api.status()).agents.find((x) => x.id === 'bad')!.appliedVersion, 4);
  // Repaired, it is back on deltas.
  rmSync(join(bad.config.dataDir, 'routes.journal'), { recursive: true });
  await api.removeRoute('b.example');
  await converged(ctl, bad, 'bad on v5');
  const f = files(bad.config.dataDir);
  assert.equal(f.snapshot, 4);
  assert.deepEqual(f.journal.map((e) => [e.baseVersion, e.version, e.snapshot]), [[4, 5, false]]);
});

test('a crash between receiving a delta and persisting it: the restart is on the last persisted table, the delta comes again', async (t) => {
  const { ctl, api, defer } = await setup(t);
  await api.setRoute('a.example', T(1));
  await api.setRoute('b.example', T(1));
  const a = await startFleetAgent(ctl.address, 'crashy');
  defer(() => a.cleanup());
  await converged(ctl, a, 'on v2');
  await api.setRoute('c.example', T(2));
  await converged(ctl, a, 'on v3');
  // It receives v4 and dies before writing it: never applied, never acked.
  a.agent.applyTable = () => new Promise(() => undefined);
  await api.setRoute('d.example', T(3));
  await waitFor('v4 sent', async () => (await api.status()).version === 4);
  // ... and another crash tore the journal line of a v5 it was appending (the tail of a SIGKILL mid-write).
  appendFileSync(join(a.config.dataDir, 'routes.journal'), '{"version":5,"baseVersion":4,"snapshot":false,"upserts":[{"match":"e.exa');
  await a.cleanup(true);
  const back = await startFleetAgent(ctl.address, 'crashy', { dataDir: a.config.dataDir });
  defer(() => back.cleanup());
  await converged(ctl, back, 'on v4 after the restart');
  assert.equal(back.agent.router.table.get('d.example')?.target, T(3));
  assert.equal(back.agent.router.table.get('e.example'), undefined);
  // Its files hold v4 now: a second restart without the controller starts there.
  await back.cleanup(true);
  const offline = await startFleetAgent('127.0.0.1:9', 'crashy', { dataDir: a.config.dataDir });
  defer(() => offline.cleanup());
  assert.equal(offline.agent.router.table.version, 4);
  assert.deepEqual(sorted(offline.agent.router.table.routes), sorted(ctl.controller.store.snapshot().routes));
});
