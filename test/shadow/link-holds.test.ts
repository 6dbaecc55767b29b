import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ShadowCopy, ShadowHold } from '../../proto/gen/mxswitch/v1/shadow.js';
import { ShadowLink } from '../../agent/shadow/link.js';
import { ShadowTransport } from '../../agent/shadow/tls.js';
import { holdToWire } from '../../agent/shadow/hold-wire.js';
import { silentLogger } from '../../shared/logger.js';
import { standInPeer } from './helpers.js';
import { waitFor } from '../helpers/agent.js';

const copy = (id: string, bytes: number): ShadowCopy => ({ id, sender: 's@sender.test', recipients: ['u@example.com'], body: Buffer.alloc(bytes, 'x'), arrivedAtMs: Date.now(), dsn: false, holds: [], transfer: 0, parts: 0, size: 0 });
const hold = (heldMs: number, holdSinceMs: number): ShadowHold => ({ recipient: 'u@example.com', heldMs, holdSinceMs, holdKind: holdSinceMs ? 'route' : '' });

test('shadow link: hold notices go batched, the newest state per recipient only, never in a batch before a copy handed over earlier', async (t) => {
  const peer = await standInPeer();
  t.after(() => peer.stop());
  const link = new ShadowLink({ agentId: 'lk-b', address: peer.address, credential: 'pair-secret' }, 'lk-a', new ShadowTransport(undefined), silentLogger);
  t.after(() => link.close());

  // Two copies too large for one batch (8 MiB of bodies), then H2's hold state, changed twice, in the same turn.
  const copied = Promise.all([link.copy(copy('H1', 5 * 1024 * 1024)), link.copy(copy('H2', 5 * 1024 * 1024))]);
  link.hold({ id: 'H2', holds: [hold(0, 1_000)] });
  link.hold({ id: 'H2', holds: [hold(4_000, 0)] });
  await copied;

  const batches = peer.batches.map((b) => ({ copies: b.copies.map((c) => c.id), holds: b.holds.map((n) => [n.id, n.holds.map((h) => [h.heldMs, h.holdSinceMs])]) }));
  assert.deepEqual(batches, [
    { copies: ['H1'], holds: [] },
    // With H2's copy (the peer applies notices after copies), and only the state it has now.
    { copies: ['H2'], holds: [['H2', [[4_000, 0]]]] },
  ]);
});

test('shadow link: a hold state with a negative time held (the clock stepped back during a hold) goes as 0 and does not fail the batches with it and after it', async (t) => {
  const peer = await standInPeer();
  t.after(() => peer.stop());
  const link = new ShadowLink({ agentId: 'lk-b', address: peer.address, credential: 'pair-secret' }, 'lk-a', new ShadowTransport(undefined), silentLogger);
  t.after(() => link.close());
  await link.copy(copy('N1', 10));
  link.hold({ id: 'N1', holds: [holdToWire({ rcpt: 'u@example.com', heldMs: -2_000, holdSince: null, holdKind: null })] });
  await link.copy(copy('N2', 10));
  await link.copy(copy('N3', 10));
  assert.deepEqual(peer.batches.flatMap((b) => b.holds.flatMap((n) => n.holds.map((h) => [n.id, h.heldMs]))), [['N1', 0]]);
  assert.deepEqual(peer.batches.flatMap((b) => b.copies.map((c) => c.id)), ['N1', 'N2', 'N3']);
});

test('shadow link: a hold notice waits only for its own message copy: a large transfer still sending its parts does not keep other messages notices back', async (t) => {
  const peer = await standInPeer();
  t.after(() => peer.stop());
  const link = new ShadowLink({ agentId: 'lk-b', address: peer.address, credential: 'pair-secret' }, 'lk-a', new ShadowTransport(undefined), silentLogger);
  t.after(() => link.close());
  await link.copy(copy('S1', 10));
  // L1's parts: one now, the rest only when the test lets them go.
  let letGo!: () => void;
  const gate = new Promise<void>((resolve) => (letGo = resolve));
  async function* parts() {
    yield Buffer.alloc(1024, 'a');
    await gate;
    yield Buffer.alloc(1024, 'b');
  }
  const large = link.copy(copy('L1', 10), parts());
  await waitFor('L1 first part at the peer', () => peer.batches.some((b) => b.parts.some((p) => p.id === 'L1')));
  link.hold({ id: 'S1', holds: [hold(0, 1_000)] });
  link.hold({ id: 'L1', holds: [hold(0, 2_000)] });
  await waitFor('S1 hold at the peer while L1 still sends its parts', () => peer.batches.some((b) => b.holds.some((n) => n.id === 'S1')));
  assert.ok(!peer.batches.some((b) => b.holds.some((n) => n.id === 'L1')), 'L1 hold waits for L1 copy');
  letGo();
  await large;
  await waitFor('L1 hold at the peer', () => peer.batches.some((b) => b.holds.some((n) => n.id === 'L1')));
  const closing = peer.batches.findIndex((b) => b.copies.some((c) => c.id === 'L1'));
  const notice = peer.batches.findIndex((b) => b.holds.some((n) => n.id === 'L1'));
  assert.ok(closing >= 0 && notice >= closing, `L1 copy in batch ${closing}, its hold in batch ${notice}`);
});
