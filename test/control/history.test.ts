import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryAgentDirectory } from '../../control/adapters/sqlite/agent-directory.js';
import { FleetHistory, type HistoryPoint } from '../../control/core/history.js';
import { Registry } from '../../control/core/registry.js';
import { silentLogger } from '../../shared/logger.js';
import type { HealthReport } from '../../shared/wire.js';

function health(totalQueued: number, delivered: number, accepted = 0): HealthReport {
  return {
    appliedVersion: 1,
    queues: [],
    counters: { accepted, delivered, deferred: 0, bounced: 0, rejected: 0 },
    lastDeliveryError: '',
    diskFreeBytes: 0,
    totalQueued,
    oldestAgeSeconds: 0,
    uptimeSeconds: 1,
  };
}

test('history: one point per agent per interval from its health reports, rates from counter deltas, a counter restart counted from 0, bounded to the span', () => {
  const registry = new Registry(new MemoryAgentDirectory(), undefined, 60_000, silentLogger);
  const history = new FleetHistory(registry, { intervalMs: 1000, spanMs: 3000 });
  const points: [string, HistoryPoint][] = [];
  history.on('point', (id, p) => points.push([id, p]));
  history.start();
  registry.observe('a1', { link: 'connected', identity: { region: 'eu', hostname: 'h', bootId: 'b1' }, health: health(5, 100, 100) }, 10_000);
  registry.observe('a1', { health: health(6, 110, 130) }, 10_500); // within the interval: no point
  registry.observe('a1', { health: health(4, 120, 140) }, 12_000);
  registry.observe('a1', { health: health(3, 10, 10) }, 14_000); // the agent restarted: counters from 0
  assert.deepEqual(
    history.snapshot().a1!.map((p) => [p.t, p.queued, p.delivered, p.accepted]),
    [
      [10_000, 5, 0, 0],
      [12_000, 4, 10, 20],
      [14_000, 3, 5, 5],
    ],
  );
  assert.equal(points.length, 3);
  registry.observe('a1', { health: health(2, 20, 20) }, 15_000);
  assert.deepEqual(history.snapshot().a1!.map((p) => p.t), [12_000, 14_000, 15_000], 'span / interval = 3 points kept');
  registry.observe('a1', { link: 'disconnected' }, 16_500);
  registry.observe('a1', { health: health(2, 30, 30) }, 17_000);
  assert.equal(history.snapshot().a1!.length, 3, 'no point from a disconnected agent');
  registry.remove('a1');
  assert.deepEqual(history.snapshot(), {});
  history.stop();
  assert.equal(registry.listenerCount('agent'), 0);
});
