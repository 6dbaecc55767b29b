import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ShadowCopy } from '../../proto/gen/mxswitch/v1/shadow.js';
import { ShadowLink } from '../../agent/shadow/link.js';
import { ShadowTransport } from '../../agent/shadow/tls.js';
import { silentLogger } from '../../shared/logger.js';
import { waitFor } from '../helpers/agent.js';
import { standInPeer } from './helpers.js';

const copy = (id: string): ShadowCopy => ({ id, sender: 's@sender.test', recipients: ['u@example.com', 'v@example.com'], body: Buffer.from('x'), arrivedAtMs: Date.now(), dsn: false, holds: [], transfer: 0, parts: 0, size: 0 });

test('shadow link: notices handed over while the peer is down reach it once it is back, with nothing more from the primary', async (t) => {
  const first = await standInPeer();
  const link = new ShadowLink({ agentId: 'lr-b', address: first.address, credential: 'pair-secret' }, 'lr-a', new ShadowTransport(undefined), silentLogger);
  t.after(() => link.close());
  await link.copy(copy('R1'));

  // The peer goes away with the stream open; a delivery and a hold on the primary meanwhile.
  first.stop();
  link.discard({ id: 'R1', recipients: ['u@example.com'] });
  link.hold({ id: 'R1', holds: [{ recipient: 'v@example.com', heldMs: 0, holdSinceMs: 1_000, holdKind: 'route' }] });

  // Back on the same address; the primary hands over nothing more.
  const again = await standInPeer(undefined, first.port);
  t.after(() => again.stop());
  const notices = () => again.batches.flatMap((b) => [...b.discards.map((d) => `discard ${d.id} ${d.recipients.join(',')}`), ...b.holds.map((n) => `hold ${n.id} ${n.holds.map((h) => `${h.recipient}@${h.holdSinceMs}`).join(',')}`)]);
  await waitFor('the notices at the peer that came back', () => notices().length === 2, 30_000);
  assert.deepEqual(notices().sort(), ['discard R1 u@example.com', 'hold R1 v@example.com@1000']);
  assert.equal(again.batches.flatMap((b) => b.copies).length, 0, 'no copy was sent again');
});
