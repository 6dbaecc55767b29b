import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AgentDirectory } from '../../control/core/ports.js';
import { Registry, type AgentInfo } from '../../control/core/registry.js';
import { silentLogger } from '../../shared/logger.js';

/** A registry over an in-memory directory, and every 'agent' event it emits. */
function registry(expected?: string[]): { r: Registry; events: AgentInfo[]; stored: Set<string> } {
  const stored = new Set<string>();
  const directory: AgentDirectory = { load: () => [], has: (id) => stored.has(id), upsert: (a) => void stored.add(a.id), delete: (id) => void stored.delete(id) };
  const r = new Registry(directory, expected, 60_000, silentLogger);
  const events: AgentInfo[] = [];
  r.on('agent', (a) => events.push({ ...a }));
  return { r, events, stored };
}

const identity = (bootId = 'boot-1') => ({ region: 'eu', hostname: 'mx1', bootId });

test('registry.observe: a session start takes the reported version as it is; later reports only raise it', () => {
  const { r, stored } = registry();
  assert.equal(r.observe('ag1', { appliedVersion: 3 }), undefined, 'an unknown agent without identity is not registered');
  r.observe('ag1', { link: 'connected', identity: identity(), appliedVersion: 7 }, 1000);
  assert.ok(stored.has('ag1'));
  assert.equal(r.get('ag1')!.state, 'connected');
  r.observe('ag1', { appliedVersion: 5 }, 1100);
  assert.equal(r.get('ag1')!.appliedVersion, 7, 'an older ack does not lower the version');
  r.observe('ag1', { appliedVersion: 9 }, 1200);
  assert.equal(r.get('ag1')!.appliedVersion, 9);
  r.observe('ag1', { link: 'disconnected', error: 'stream error: reset' }, 1300);
  assert.deepEqual([r.get('ag1')!.state, r.get('ag1')!.lastError, r.get('ag1')!.connectedAt], ['disconnected', 'stream error: reset', 0]);
  // It comes back with an older table on disk (restored from a backup): that is what it has now.
  r.observe('ag1', { link: 'connected', identity: identity(), appliedVersion: 4 }, 1400);
  assert.deepEqual([r.get('ag1')!.state, r.get('ag1')!.appliedVersion, r.get('ag1')!.connectedAt], ['connected', 4, 1400]);
  // A new boot id while connected is a new session too.
  r.observe('ag1', { link: 'connected', identity: identity('boot-2'), appliedVersion: 2 }, 1500);
  assert.equal(r.get('ag1')!.appliedVersion, 2);
});

test('registry.observe: a nack is kept until a version at or above it is applied; heartbeats are not events; a lost agent that speaks is connected', () => {
  const { r, events } = registry();
  r.observe('ag1', { link: 'connected', identity: identity(), appliedVersion: 1 }, 1000);
  r.observe('ag1', { nack: { version: 2, error: 'bad target' } }, 1100);
  assert.equal(r.get('ag1')!.lastError, 'version 2 refused: bad target');
  r.observe('ag1', { appliedVersion: 1 }, 1150);
  assert.equal(r.get('ag1')!.lastError, 'version 2 refused: bad target', 'a lower ack keeps the refusal');
  r.observe('ag1', { appliedVersion: 3 }, 1200);
  assert.equal(r.get('ag1')!.lastError, '');
  const n = events.length;
  r.observe('ag1', {}, 1300);
  r.observe('ag1', { appliedVersion: 3 }, 1400);
  assert.equal(events.length, n, 'nothing changed but the last-seen time: no event');
  assert.equal(r.get('ag1')!.lastSeen, 1400);
  r.sweep(1400 + 60_001);
  assert.equal(r.get('ag1')!.state, 'lost');
  r.observe('ag1', { link: 'disconnected' }, 1400 + 60_002);
  assert.equal(r.get('ag1')!.state, 'lost', 'a stale report does not revive it');
  r.observe('ag1', {}, 1400 + 60_003);
  assert.equal(r.get('ag1')!.state, 'connected');
});

test('registry.observe: an agent known only from a stale report is registered, not connected, with its last health', () => {
  const { r } = registry(['ag2']);
  const health = { appliedVersion: 4, queues: [], lastDeliveryError: '', diskFreeBytes: 1, totalQueued: 0, oldestAgeSeconds: 0, uptimeSeconds: 9 };
  r.observe('ag1', { link: 'disconnected', identity: identity(), appliedVersion: 4, health }, 500);
  const a = r.get('ag1')!;
  assert.deepEqual([a.state, a.appliedVersion, a.healthAt, a.expected], ['disconnected', 4, 500, false]);
  assert.equal(r.get('ag2')!.expected, true);
  assert.deepEqual(r.expectedIds(), ['ag2']);
});
