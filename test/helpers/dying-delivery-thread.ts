import { parentPort } from 'node:worker_threads';

/** A delivery thread that dies at its first send, as one would on a fatal error (test/agent/delivery-thread). */
parentPort!.on('message', (m: { op: string }) => {
  if (m.op === 'send') process.exit(7);
});
