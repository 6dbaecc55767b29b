import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { test } from 'node:test';
import { buffersDone } from '../../agent/buffer-garbage.js';

// The large-message RSS figure (bench `large`) depends on dead Buffers being freed while the message still passes
// through; this checks the mechanism itself: the collection really runs, and only once enough bytes are done.
test('buffersDone collects dead Buffers once 8 MB have passed, not before', async () => {
  const dead = () => new WeakRef(Buffer.alloc(1024 * 1024));
  const early = dead();
  await tick(); // a WeakRef's target is kept alive until the end of the job that made it
  buffersDone(1024 * 1024);
  assert.ok(early.deref(), 'collected after 1 MB: the threshold is gone');
  await tick(); // deref() keeps it alive for this job again
  buffersDone(7 * 1024 * 1024);
  assert.equal(early.deref(), undefined, 'a dead 1 MB Buffer survived the collection at 8 MB');
  assert.equal((globalThis as { gc?: unknown }).gc, undefined, 'the gc extension leaked into the global scope');
});
