import { parentPort, workerData } from 'node:worker_threads';
import { storageError } from './types.js';
import { Writer, type WriteReply, type WriteRequest, type WriterOptions } from './writer.js';

/** The queue's writer thread: runs the Writer methods the spool asks for, one after another, and answers each. */

const port = parentPort!;
const writer = new Writer(workerData as WriterOptions);
port.on('message', ({ id, op, args }: WriteRequest) => {
  let reply: WriteReply;
  try {
    reply = { id, value: (writer[op] as (...a: unknown[]) => unknown).apply(writer, args) };
  } catch (err) {
    const e = storageError(err);
    reply = { id, error: { full: e.full, message: e.message } };
  }
  port.postMessage(reply);
});
